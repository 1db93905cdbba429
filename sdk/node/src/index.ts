export { Palisade, type PalisadeOptions } from './client.js';
export {
  appRole,
  jwtAuth,
  staticToken,
  tokenFile,
  ClientCredentials,
  type AppRoleOptions,
  type JwtAuthOptions,
  type ClientCredentialsOptions,
  type LoginResult,
  type TokenSource,
} from './auth.js';
export { ErrorCodes, PalisadeError, isPalisadeError, type ErrorCode } from './errors.js';
export { Transport, apiPath, type TransportOptions, type ApiResponse } from './http.js';
export { KvV2, WatchedSecret, type SecretVersion, type CachedSecret, type WatchOptions } from './secrets.js';
export { LeasedSecret, type LeasedSecretOptions, type LeasedValue } from './leases.js';
export { Transit, type FieldOptions } from './transit.js';
export { MtlsDispatcher, type MtlsOptions, type CertificateInfo } from './mtls.js';
export {
  Authenticator,
  TokenVerifier,
  expressAuth,
  fastifyAuth,
  requireScopes,
  trustProxy,
  addressMatcher,
  refusal,
  type AuthOptions,
  type GatewayIdentityOptions,
  type Identity,
  type VerifierOptions,
} from './middleware.js';
export { pinoRedaction, REDACT_PATHS, type PinoRedaction } from './pino.js';
// undici's fetch: the one the dispatchers here are made for
export { fetch } from 'undici';
