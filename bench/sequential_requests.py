#!/usr/bin/env python3
"""Send N sequential GET requests over one keep-alive TLS connection (bench/callgrind.sh).
Usage: sequential_requests.py CAFILE TOKEN N"""
import http.client, ssl, sys
ca, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)
c = http.client.HTTPSConnection("localhost", 18445, context=ctx, timeout=60)
for i in range(n):
    c.request("GET", "/orders/index.json", headers={"Authorization": "Bearer " + token})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
print("done", n)
