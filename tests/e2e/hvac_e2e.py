#!/usr/bin/env python3
"""End-to-end compatibility run: an unmodified `hvac` client against a palisade server.

Usage: hvac_e2e.py ADDR [--audit-file PATH] [--secrets-out PATH]

ADDR is the server's base URL (http://127.0.0.1:PORT). The server must be
fresh (not initialised): the script initialises it (5 shares, threshold 3),
unseals it and drives sys, token, KV v2, KV v1 and audit endpoints through
hvac's public API only.

--audit-file   absolute path for the file audit device the script enables
               (default: a file in a new temporary directory).
--secrets-out  where to write, as JSON, every credential and secret value the
               run produced (root token, unseal keys, child tokens, written
               values) so the caller can check that none of them reached the
               audit log or the server's output.

Prints one line per check, then `N passed, 0 failed`; exits 1 if any check
failed. Run by crates/cli/tests/hvac.rs.
"""

import json
import os
import sys
import tempfile
import traceback
import warnings

import hvac
import hvac.exceptions

# Values written by the run. Distinctive so that a leak is easy to grep for.
V2_PASSWORD = "hvac-e2e-v2-password-7f3a91c2"
V2_PASSWORD_2 = "hvac-e2e-v2-password-second-5be1"
V2_PATCHED = "hvac-e2e-v2-patched-value-0c4d"
V1_SECRET = "hvac-e2e-v1-secret-value-9e22b7"
LEAF_SECRET = "hvac-e2e-leaf-secret-44aa0f"

POLICY_HCL = """
path "kv2/data/app/*" {
  capabilities = ["read"]
}
path "kv2/metadata/*" {
  capabilities = ["list"]
}
"""


class Run:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, fn):
        try:
            fn()
        except Exception:  # noqa: BLE001 - report every failure, keep going
            self.failed += 1
            print(f"FAIL {name}")
            traceback.print_exc(file=sys.stdout)
        else:
            self.passed += 1
            print(f"ok   {name}")


def expect_raises(exc, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc as e:
        return e
    raise AssertionError(f"expected {exc.__name__}")


def main(argv):
    args = list(argv[1:])
    if not args:
        print(__doc__)
        return 2
    addr = args.pop(0)
    audit_file = None
    secrets_out = None
    while args:
        flag = args.pop(0)
        if flag == "--audit-file":
            audit_file = args.pop(0)
        elif flag == "--secrets-out":
            secrets_out = args.pop(0)
        else:
            print(f"unknown argument {flag!r}")
            return 2
    if audit_file is None:
        audit_file = os.path.join(tempfile.mkdtemp(prefix="hvac-e2e-"), "audit.log")

    warnings.simplefilter("ignore", DeprecationWarning)
    run = Run()
    client = hvac.Client(url=addr, timeout=30)
    state = {"tokens": [], "keys": []}

    # ---- sys: init, unseal, health ------------------------------------------------
    def init():
        assert client.sys.is_initialized() is False
        assert client.sys.is_sealed() is True
        r = client.sys.initialize(secret_shares=5, secret_threshold=3)
        assert len(r["keys"]) == 5 and len(r["keys_base64"]) == 5, r.keys()
        assert r["root_token"], "no root token"
        state["keys"] = r["keys"] + r["keys_base64"]
        state["root"] = r["root_token"]
        state["unseal"] = r["keys"]
        assert client.sys.is_initialized() is True
        assert client.sys.is_sealed() is True
        e = expect_raises(hvac.exceptions.InvalidRequest, client.sys.initialize, 5, 3)
        assert "Vault is already initialized" in str(e), str(e)

    run.check("sys.initialize 5/3, is_initialized, already initialized", init)

    def sealed_health():
        r = client.sys.read_health_status(method="GET")
        # hvac returns the body for GET even on 503
        body = r if isinstance(r, dict) else r.json()
        assert body["sealed"] is True and body["initialized"] is True, body

    run.check("read_health_status GET while sealed", sealed_health)

    def unseal():
        keys = state["unseal"]
        r = client.sys.submit_unseal_key(keys[0])
        assert r["sealed"] is True and r["progress"] == 1 and r["t"] == 3 and r["n"] == 5, r
        r = client.sys.submit_unseal_keys(keys[1:3])
        assert r["sealed"] is False, r
        assert client.sys.is_sealed() is False
        st = client.sys.read_seal_status()
        assert st["sealed"] is False and st["t"] == 3 and st["n"] == 5, st

    run.check("submit_unseal_key(s) with 3 of 5 keys, is_sealed", unseal)

    client.token = state.get("root", "")

    def health():
        r = client.sys.read_health_status()  # HEAD by default
        assert r.status_code == 200, r.status_code
        assert r.text == "", "HEAD must not carry a body"
        body = client.sys.read_health_status(method="GET")
        body = body if isinstance(body, dict) else body.json()
        assert body["initialized"] is True and body["sealed"] is False, body
        assert body["standby"] is False and "version" in body, body

    run.check("read_health_status HEAD (default) and GET", health)

    def authenticated():
        assert client.is_authenticated() is True

    run.check("is_authenticated with the root token", authenticated)

    # ---- mounts ---------------------------------------------------------------------
    def mounts():
        client.sys.enable_secrets_engine(
            backend_type="kv", path="kv2", options={"version": "2"}, description="v2 store"
        )
        client.sys.enable_secrets_engine(backend_type="kv", path="kv1", options={"version": "1"})
        r = client.sys.list_mounted_secrets_engines()
        data = r["data"]
        assert data["kv2/"]["type"] == "kv", data["kv2/"]
        assert data["kv2/"]["options"]["version"] == "2", data["kv2/"]
        assert data["kv2/"]["description"] == "v2 store", data["kv2/"]
        assert data["kv1/"]["type"] == "kv", data["kv1/"]
        assert "kv1/" in r, "mount keys must be repeated at the top level"
        e = expect_raises(
            hvac.exceptions.InvalidRequest,
            client.sys.enable_secrets_engine,
            backend_type="kv",
            path="kv2",
        )
        assert "already in use" in str(e), str(e)

    run.check("enable_secrets_engine kv v2 + v1, list_mounted_secrets_engines", mounts)

    # ---- policies -----------------------------------------------------------------
    def policies():
        client.sys.create_or_update_policy(name="app-read", policy=POLICY_HCL)
        r = client.sys.read_policy(name="app-read")
        assert "kv2/data/app/*" in r["data"]["rules"], r
        names = client.sys.list_policies()["data"]["policies"]
        assert "app-read" in names and "root" in names and "default" in names, names

    run.check("create_or_update_policy, read_policy, list_policies", policies)

    # ---- tokens -------------------------------------------------------------------
    def tokens():
        r = client.auth.token.create(policies=["app-read"], ttl="1h", renewable=True)
        tok = r["auth"]["client_token"]
        assert tok and r["auth"]["accessor"], r["auth"]
        assert "app-read" in r["auth"]["policies"], r["auth"]
        state["limited"] = tok
        state["tokens"].append(tok)
        child = hvac.Client(url=addr, token=tok, timeout=30)
        me = child.auth.token.lookup_self()["data"]
        assert "app-read" in me["policies"], me
        assert 0 < me["ttl"] <= 3600, me
        assert me["renewable"] is True, me
        ren = child.auth.token.renew_self(increment="2h")
        assert ren["auth"]["client_token"] == tok, "renew must return the same token"
        assert ren["auth"]["lease_duration"] > 0, ren["auth"]
        looked = client.auth.token.lookup(tok)["data"]
        assert looked["accessor"] == r["auth"]["accessor"], looked
        # a throwaway token: create, revoke, then it no longer works
        t2 = client.auth.token.create(policies=["default"], ttl="10m")["auth"]["client_token"]
        state["tokens"].append(t2)
        client.auth.token.revoke(t2)
        gone = hvac.Client(url=addr, token=t2, timeout=30)
        expect_raises(hvac.exceptions.Forbidden, gone.auth.token.lookup_self)
        assert gone.is_authenticated() is False

    run.check("token create/lookup_self/renew_self/lookup/revoke", tokens)

    # ---- KV v2 --------------------------------------------------------------------
    kv2 = client.secrets.kv.v2

    def kv2_write_read():
        r = kv2.create_or_update_secret(
            path="app/db", secret={"password": V2_PASSWORD, "user": "app"}, mount_point="kv2", cas=0
        )
        assert r["data"]["version"] == 1, r
        e = expect_raises(
            hvac.exceptions.InvalidRequest,
            kv2.create_or_update_secret,
            path="app/db",
            secret={"password": "x"},
            mount_point="kv2",
            cas=0,
        )
        assert "check-and-set parameter did not match the current version" in str(e), str(e)
        r = kv2.create_or_update_secret(
            path="app/db", secret={"password": V2_PASSWORD_2, "user": "app"}, mount_point="kv2", cas=1
        )
        assert r["data"]["version"] == 2, r
        r = kv2.read_secret_version(path="app/db", mount_point="kv2", raise_on_deleted_version=True)
        assert r["data"]["data"]["password"] == V2_PASSWORD_2, r
        assert r["data"]["metadata"]["version"] == 2, r
        r = kv2.read_secret_version(path="app/db", version=1, mount_point="kv2", raise_on_deleted_version=True)
        assert r["data"]["data"]["password"] == V2_PASSWORD, r
        kv2.create_or_update_secret(path="app/nested/leaf", secret={"k": LEAF_SECRET}, mount_point="kv2")

    run.check("kv v2 create_or_update_secret (cas), read_secret_version", kv2_write_read)

    def kv2_patch():
        r = kv2.patch(path="app/db", secret={"password": V2_PATCHED}, mount_point="kv2")
        assert r["data"]["version"] == 3, r
        r = kv2.read_secret_version(path="app/db", mount_point="kv2", raise_on_deleted_version=True)
        assert r["data"]["data"] == {"password": V2_PATCHED, "user": "app"}, r["data"]["data"]

    run.check("kv v2 patch", kv2_patch)

    def kv2_list():
        keys = kv2.list_secrets(path="app", mount_point="kv2")["data"]["keys"]
        assert sorted(keys) == ["db", "nested/"], keys
        expect_raises(hvac.exceptions.InvalidPath, kv2.list_secrets, path="nothing-here", mount_point="kv2")

    run.check("kv v2 list_secrets (and empty list is InvalidPath)", kv2_list)

    def kv2_delete_undelete_destroy():
        kv2.delete_latest_version_of_secret(path="app/db", mount_point="kv2")
        expect_raises(
            hvac.exceptions.InvalidPath,
            kv2.read_secret_version,
            path="app/db",
            mount_point="kv2",
            raise_on_deleted_version=True,
        )
        # hvac >= 1.1: with raise_on_deleted_version=False the 404 body is returned
        r = kv2.read_secret_version(path="app/db", mount_point="kv2", raise_on_deleted_version=False)
        assert r["data"]["data"] is None, r
        assert r["data"]["metadata"]["deletion_time"], r
        kv2.undelete_secret_versions(path="app/db", versions=[3], mount_point="kv2")
        r = kv2.read_secret_version(path="app/db", mount_point="kv2", raise_on_deleted_version=True)
        assert r["data"]["data"]["password"] == V2_PATCHED, r
        kv2.destroy_secret_versions(path="app/db", versions=[1], mount_point="kv2")
        expect_raises(
            hvac.exceptions.InvalidPath,
            kv2.read_secret_version,
            path="app/db",
            version=1,
            mount_point="kv2",
            raise_on_deleted_version=True,
        )
        meta = kv2.read_secret_metadata(path="app/db", mount_point="kv2")["data"]
        assert meta["versions"]["1"]["destroyed"] is True, meta["versions"]
        assert meta["versions"]["3"]["deletion_time"] == "", meta["versions"]

    run.check("kv v2 delete_latest -> InvalidPath, undelete, destroy", kv2_delete_undelete_destroy)

    def kv2_metadata():
        meta = kv2.read_secret_metadata(path="app/db", mount_point="kv2")["data"]
        assert meta["current_version"] == 3 and meta["oldest_version"] >= 0, meta
        kv2.update_metadata(
            path="app/db",
            max_versions=5,
            cas_required=True,
            custom_metadata={"owner": "team-a"},
            mount_point="kv2",
        )
        meta = kv2.read_secret_metadata(path="app/db", mount_point="kv2")["data"]
        assert meta["max_versions"] == 5 and meta["cas_required"] is True, meta
        assert meta["custom_metadata"] == {"owner": "team-a"}, meta
        e = expect_raises(
            hvac.exceptions.InvalidRequest,
            kv2.create_or_update_secret,
            path="app/db",
            secret={"password": "no-cas"},
            mount_point="kv2",
        )
        assert "check-and-set parameter required for this call" in str(e), str(e)

    run.check("kv v2 read_secret_metadata, update_metadata (cas_required)", kv2_metadata)

    # ---- KV v1 --------------------------------------------------------------------
    kv1 = client.secrets.kv.v1

    def kv1_crud():
        kv1.create_or_update_secret(path="svc/api", secret={"key": V1_SECRET}, mount_point="kv1")
        r = kv1.read_secret(path="svc/api", mount_point="kv1")
        assert r["data"] == {"key": V1_SECRET}, r
        keys = kv1.list_secrets(path="svc", mount_point="kv1")["data"]["keys"]
        assert keys == ["api"], keys
        kv1.delete_secret(path="svc/api", mount_point="kv1")
        expect_raises(hvac.exceptions.InvalidPath, kv1.read_secret, path="svc/api", mount_point="kv1")

    run.check("kv v1 create/read/list/delete", kv1_crud)

    # ---- audit --------------------------------------------------------------------
    def audit():
        client.sys.enable_audit_device(
            device_type="file",
            path="hvac-file",
            description="enabled by hvac",
            options={"file_path": audit_file},
        )
        devices = client.sys.list_enabled_audit_devices()["data"]
        assert devices["hvac-file/"]["type"] == "file", devices
        assert devices["hvac-file/"]["options"]["file_path"] == audit_file, devices
        h = client.sys.calculate_hash(path="hvac-file", input_to_hash=V2_PATCHED)["data"]["hash"]
        assert h.startswith("hmac-sha256:") and V2_PATCHED not in h, h
        state["hmac"] = h
        # audited traffic through the new device: the read's response holds V2_PATCHED,
        # which must appear in the log only as this HMAC
        kv2.read_secret_version(path="app/db", mount_point="kv2", raise_on_deleted_version=True)
        with open(audit_file, encoding="utf-8") as f:
            text = f.read()
        assert h in text, "the audit log must carry the HMAC of the secret"
        assert V2_PATCHED not in text, "the audit log must not carry the secret"

    run.check("enable_audit_device, list_enabled_audit_devices, calculate_hash", audit)

    # ---- denied -------------------------------------------------------------------
    def denied():
        limited = hvac.Client(url=addr, token=state["limited"], timeout=30)
        r = limited.secrets.kv.v2.read_secret_version(
            path="app/db", mount_point="kv2", raise_on_deleted_version=True
        )
        assert r["data"]["data"]["password"] == V2_PATCHED, "policy allows kv2/data/app/*"
        e = expect_raises(
            hvac.exceptions.Forbidden,
            limited.secrets.kv.v1.read_secret,
            path="svc/api",
            mount_point="kv1",
        )
        assert "permission denied" in str(e), str(e)
        expect_raises(
            hvac.exceptions.Forbidden,
            limited.secrets.kv.v2.create_or_update_secret,
            path="app/db",
            secret={"password": "nope"},
            mount_point="kv2",
            cas=3,
        )
        expect_raises(hvac.exceptions.Forbidden, limited.sys.list_enabled_audit_devices)

    run.check("limited token: allowed read, denied reads/writes raise Forbidden", denied)

    # the database engine and leases through hvac's own methods, against the
    # real PostgreSQL (PALISADE_TEST_PG_URL, as the Rust tests use)
    pg_url = os.environ.get("PALISADE_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/test")
    pg_hostdb = pg_url.split("@", 1)[-1]
    suffix = os.urandom(4).hex()
    static_user = f"hvac_static_{suffix}"
    state["db_values"] = []

    def psql(sql):
        import subprocess

        out = subprocess.run(
            ["psql", pg_url, "-tAq", "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    def role_exists(name):
        return psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{name}'") == "1"

    def database():
        c = client
        c.sys.enable_secrets_engine(backend_type="database", path="database")
        c.secrets.database.configure(
            name="pg",
            plugin_name="postgresql-database-plugin",
            allowed_roles=["ro", "st"],
            connection_url=f"postgresql://{{{{username}}}}:{{{{password}}}}@{pg_hostdb}",
            username="postgres",
            password="hvac-e2e-root-password-1b7e",
        )
        conn = c.secrets.database.read_connection(name="pg")["data"]
        assert conn["plugin_name"] == "postgresql-database-plugin", conn
        assert "hvac-e2e-root-password-1b7e" not in json.dumps(conn), conn
        assert c.secrets.database.list_connections()["data"]["keys"] == ["pg"]
        c.secrets.database.create_role(
            name="ro",
            db_name="pg",
            creation_statements=[
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
            ],
            default_ttl="1h",
            max_ttl="2h",
        )
        assert c.secrets.database.read_role(name="ro")["data"]["db_name"] == "pg"
        creds = c.secrets.database.generate_credentials(name="ro")
        user, password = creds["data"]["username"], creds["data"]["password"]
        state["db_values"].append(password)
        lease = creds["lease_id"]
        assert creds["lease_duration"] == 3600 and creds["renewable"] is True, creds
        assert role_exists(user), user
        looked = c.sys.read_lease(lease_id=lease)["data"]
        assert looked["id"] == lease and looked["renewable"] is True, looked
        renewed = c.sys.renew_lease(lease_id=lease, increment=1800)
        assert renewed["lease_id"] == lease and renewed["lease_duration"] == 1800, renewed
        assert "issue/" not in json.dumps(c.sys.list_leases(prefix="database/creds/ro"))
        c.sys.revoke_lease(lease_id=lease)
        assert not role_exists(user), "revoked role still exists"
        expect_raises(hvac.exceptions.InvalidRequest, c.sys.read_lease, lease_id=lease)
        # revoke_prefix (sudo) drops every credential under the role
        users = [c.secrets.database.generate_credentials(name="ro")["data"] for _ in range(2)]
        state["db_values"].extend(u["password"] for u in users)
        c.sys.revoke_prefix(prefix="database/creds/ro")
        assert not any(role_exists(u["username"]) for u in users)

    run.check("database configure/create_role/generate_credentials, leases read/renew/revoke/revoke_prefix", database)

    def database_static():
        c = client
        psql(f"CREATE ROLE \"{static_user}\" WITH LOGIN PASSWORD 'hvac-initial'")
        try:
            c.secrets.database.create_static_role(
                name="st",
                db_name="pg",
                username=static_user,
                rotation_statements=["ALTER ROLE \"{{name}}\" WITH PASSWORD '{{password}}';"],
                rotation_period=3600,
            )
            first = c.secrets.database.get_static_credentials(name="st")["data"]
            assert first["username"] == static_user and first["rotation_period"] == 3600, first
            c.secrets.database.rotate_static_role_credentials(name="st")
            second = c.secrets.database.get_static_credentials(name="st")["data"]
            assert second["password"] != first["password"], "not rotated"
            state["db_values"].extend([first["password"], second["password"]])
            assert c.secrets.database.list_static_roles()["data"]["keys"] == ["st"]
            c.secrets.database.delete_static_role(name="st")
        finally:
            psql(f"DROP ROLE IF EXISTS \"{static_user}\"")

    run.check("database static roles: create, get_static_credentials, rotate", database_static)

    def revoke_limited():
        limited = hvac.Client(url=addr, token=state["limited"], timeout=30)
        limited.auth.token.revoke_self()
        assert limited.is_authenticated() is False

    run.check("token revoke_self", revoke_limited)

    if secrets_out:
        with open(secrets_out, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "root_token": state.get("root", ""),
                    "tokens": state["tokens"],
                    "unseal_keys": state["keys"],
                    "values": [V2_PASSWORD, V2_PASSWORD_2, V2_PATCHED, V1_SECRET, LEAF_SECRET, "hvac-e2e-root-password-1b7e"]
                    + state.get("db_values", []),
                    "hmac": state.get("hmac", ""),
                },
                f,
            )

    print(f"{run.passed} passed, {run.failed} failed")
    return 0 if run.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
