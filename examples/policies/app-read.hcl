# Read-only access to one application's secrets in the KV v2 mount at secret/.
path "secret/data/app/*" {
  capabilities = ["read"]
}

path "secret/metadata/app/*" {
  capabilities = ["read", "list"]
}

# Everything under admin/ stays closed even if a broader rule is added later.
path "secret/data/app/admin/*" {
  capabilities = ["deny"]
}
