"""The unmodified hvac client against one node of a Palisade HA cluster
(active, forwarding standby or redirecting standby): KV v2 create, read,
patch, list, versions and delete, policies, tokens (create, lookup,
renew, revoke), health and leader. The cluster is initialised and unsealed
by the caller.

usage: python3 hvac_cluster.py ADDR ROOT_TOKEN PREFIX
Prints "N passed, 0 failed" last when every check passed.
"""
import sys
import warnings

import hvac


def main(argv):
    if len(argv) != 4:
        print(__doc__)
        return 2
    addr, root, prefix = argv[1], argv[2], argv[3]
    warnings.simplefilter("ignore", DeprecationWarning)
    client = hvac.Client(url=addr, token=root, timeout=30)
    passed = failed = 0

    def check(name, fn):
        nonlocal passed, failed
        try:
            fn()
            passed += 1
            print(f"ok   {name}")
        except Exception as e:  # noqa: BLE001 - report every failure
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")

    kv = client.secrets.kv.v2
    path = f"{prefix}/app"

    def kv_ops():
        r = kv.create_or_update_secret(path=path, secret={"user": "svc", "password": "pw-1"})
        assert r["data"]["version"] == 1, r
        r = kv.read_secret_version(path=path, raise_on_deleted_version=True)
        assert r["data"]["data"] == {"user": "svc", "password": "pw-1"}, r
        r = kv.patch(path=path, secret={"password": "pw-2"})
        assert r["data"]["version"] == 2, r
        r = kv.read_secret_version(path=path, version=1, raise_on_deleted_version=True)
        assert r["data"]["data"]["password"] == "pw-1", r
        keys = kv.list_secrets(path=prefix)["data"]["keys"]
        assert keys == ["app"], keys
        meta = kv.read_secret_metadata(path=path)["data"]
        assert meta["current_version"] == 2, meta
        kv.delete_metadata_and_all_versions(path=path)
        try:
            kv.read_secret_version(path=path, raise_on_deleted_version=True)
            raise AssertionError("read after delete succeeded")
        except hvac.exceptions.InvalidPath:
            pass

    check("kv v2 create, read, patch, versions, list, metadata, delete", kv_ops)

    def policies_and_tokens():
        name = f"{prefix}-reader"
        client.sys.create_or_update_acl_policy(
            name=name, policy=f'path "secret/data/{prefix}/*" {{ capabilities = ["read"] }}'
        )
        assert name in client.sys.list_acl_policies()["data"]["keys"]
        t = client.auth.token.create(policies=[name], ttl="1h", renewable=True)
        tok = t["auth"]["client_token"]
        user = hvac.Client(url=addr, token=tok, timeout=30)
        assert user.is_authenticated()
        look = user.auth.token.lookup_self()["data"]
        assert name in look["policies"], look
        r = user.auth.token.renew_self(increment="2h")
        assert r["auth"]["lease_duration"] > 3600, r
        kv.create_or_update_secret(path=f"{prefix}/shared", secret={"v": "1"})
        assert user.secrets.kv.v2.read_secret_version(
            path=f"{prefix}/shared", raise_on_deleted_version=True
        )["data"]["data"] == {"v": "1"}
        try:
            user.secrets.kv.v2.create_or_update_secret(path=f"{prefix}/shared", secret={"v": "2"})
            raise AssertionError("write allowed by a read-only policy")
        except hvac.exceptions.Forbidden:
            pass
        client.auth.token.revoke(tok)
        assert not user.is_authenticated()

    check("policies, token create/lookup/renew/revoke, a refused write", policies_and_tokens)

    def bad_token():
        c = hvac.Client(url=addr, token="hvs.not-a-token", timeout=30)
        try:
            c.secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)
            raise AssertionError("unknown token accepted")
        except hvac.exceptions.Forbidden as e:
            assert "permission denied" in str(e), str(e)

    check("an unknown token is refused with permission denied", bad_token)

    def health_leader():
        assert client.sys.is_initialized() is True
        assert client.sys.is_sealed() is False
        leader = client.sys.read_leader_status()
        assert leader["ha_enabled"] is True and leader["leader_address"], leader

    check("is_initialized, is_sealed, read_leader_status", health_leader)

    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
