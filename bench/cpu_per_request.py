#!/usr/bin/env python3
"""CPU time per proxied request: nginx (plain TLS proxy) and one or more palisade
gateway binaries, interleaved rounds of the bench/gateway.sh setup (TLS + ES256 JWT +
Cedar + rate limits; static upstream as its own nginx). Reports req/s and the proxy's
utime+stime per request (from /proc/PID/stat) for each round and their medians.

Needs nginx, wrk, curl and a dist build (cargo build --profile dist -p palisade-cli
-p palisade-bench). Usage: bench/cpu_per_request.py [BIN...]  (default target/dist/palisade);
ROUNDS (3) and DURATION (5 s) from the environment."""
import subprocess,sys,re,os,time,statistics,tempfile,json,shutil
os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
T=json.loads(subprocess.run(["cargo","metadata","--format-version","1","--no-deps"],capture_output=True,text=True,check=True).stdout)["target_directory"]
bins=sys.argv[1:] or [f"{T}/dist/palisade"]
ROUNDS=int(os.environ.get("ROUNDS","3")); DURATION=os.environ.get("DURATION","5")
d=tempfile.mkdtemp(); os.chmod(d,0o755)
subprocess.run([f"{T}/dist/palisade-bench","gateway-setup",d,"--ports","18081,18444,18445,19902"],check=True,capture_output=True)
tok=open(f"{d}/token.txt").read().strip()
up=subprocess.Popen(["nginx","-c",f"{d}/upstream.conf"],stdin=subprocess.DEVNULL,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
ng=subprocess.Popen(["nginx","-c",f"{d}/proxy.conf"],stdin=subprocess.DEVNULL,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
time.sleep(0.5)
def kids(p):
    try: return [int(x) for x in open(f"/proc/{p}/task/{p}/children").read().split()]
    except: return []
def cpu(pids):
    t=0
    for p in pids:
        f=open(f"/proc/{p}/stat").read().rsplit(")",1)[1].split()
        t+=int(f[11])+int(f[12])
    return t*1000//os.sysconf("SC_CLK_TCK")
def run(url, pids):
    b=cpu(pids); t0=os.times()
    out=subprocess.run(["wrk","-t1","-c64",f"-d{DURATION}s","-H",f"Authorization: Bearer {tok}",url],capture_output=True,text=True).stdout
    a=cpu(pids); t1=os.times()
    n=int(re.search(r"(\d+) requests in",out).group(1))
    return n/float(DURATION), (a-b)*1000/n
try:
    res={}
    for r in range(ROUNDS):
        rps,us=run("https://localhost:18444/orders/index.json",[ng.pid]+kids(ng.pid))
        res.setdefault("nginx",[]).append((rps,us))
        for b in bins:
            g=subprocess.Popen([b,"gateway","--config",f"{d}/gateway.toml"],stdin=subprocess.DEVNULL,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
            try:
                for _ in range(100):
                    if subprocess.run(["curl","-sf","--cacert",f"{d}/ca.pem","-H",f"Authorization: Bearer {tok}","https://localhost:18445/orders/index.json"],capture_output=True).returncode==0: break
                    time.sleep(0.1)
                rps,us=run("https://localhost:18445/orders/index.json",[g.pid])
                res.setdefault(b,[]).append((rps,us))
            finally:
                g.terminate(); g.wait()
finally:
    for p in (ng, up):
        p.terminate(); p.wait()
    shutil.rmtree(d, ignore_errors=True)
for k,v in res.items():
    print(f"{k}: req/s {[int(x[0]) for x in v]} median {statistics.median([x[0] for x in v]):.0f}; proxy CPU us/request {[round(x[1],1) for x in v]} median {statistics.median([x[1] for x in v]):.1f}")
