#!/usr/bin/env python3
"""Regenerates the bundled sample data of pipelines/local.toml (deterministic).

Not needed to run anything: the generated files are committed. Writes
  apps.jsonl                          metadata changelog (IPs change owner over time)
  flows/<yyyy>/<mm>/<dd>/*.log.gz     S3-style flow-log files, each with a header line
"""
import gzip, json, random, os

random.seed(7)
HERE = os.path.dirname(os.path.abspath(__file__))
T0 = 1700000000  # 2023-11-14T22:13:20Z
HOUR = 3600

APPS = {
    # app: (cluster, region, zones, subnet prefix)
    "api":      ("api-prod",      "us-east-1", ["us-east-1a", "us-east-1b"], "10.0.1."),
    "web":      ("web-prod",      "us-east-1", ["us-east-1a", "us-east-1c"], "10.0.2."),
    "batch":    ("batch-prod",    "us-east-1", ["us-east-1b"],               "10.0.3."),
    "db":       ("db-prod",       "us-west-2", ["us-west-2a", "us-west-2b"], "10.1.1."),
    "cache":    ("cache-prod",    "eu-west-1", ["eu-west-1a"],               "10.2.1."),
    "payments": ("payments-prod", "eu-west-1", ["eu-west-1b"],               "10.2.2."),
}
ACCOUNT = "123456789012"

events = []
def assign(ts, ip, app, zone):
    cluster, region, _, _ = APPS[app]
    events.append({"ts": ts, "op": "assign", "ip": ip,
                   "attrs": {"app": app, "cluster": cluster, "region": region, "zone": zone, "account": ACCOUNT}})

# Networks: VPC fallbacks, AWS service ranges, the internet.
events.append({"ts": T0 - 86400, "op": "assign", "cidr": "10.0.0.0/16", "attrs": {"app": "vpc-use1", "region": "us-east-1"}})
events.append({"ts": T0 - 86400, "op": "assign", "cidr": "10.1.0.0/16", "attrs": {"app": "vpc-usw2", "region": "us-west-2"}})
events.append({"ts": T0 - 86400, "op": "assign", "cidr": "10.2.0.0/16", "attrs": {"app": "vpc-euw1", "region": "eu-west-1"}})
events.append({"ts": T0 - 86400, "op": "assign", "cidr": "52.216.0.0/15", "attrs": {"app": "aws-s3", "region": "us-east-1"}})
events.append({"ts": T0 - 86400, "op": "assign", "cidr": "3.5.0.0/19", "attrs": {"app": "aws-s3", "region": "us-east-1"}})
events.append({"ts": T0 - 86400, "op": "assign", "cidr": "2600:1f18::/36", "attrs": {"app": "vpc-use1-v6", "region": "us-east-1"}})
events.append({"ts": T0 - 86400, "op": "assign", "cidr": "0.0.0.0/0", "attrs": {"app": "internet"}})
events.append({"ts": T0 - 86400, "op": "assign", "cidr": "::/0", "attrs": {"app": "internet"}})

# Stable owners.
hosts = {}  # ip -> list of (from, to, app)
for app, (_, _, zones, prefix) in APPS.items():
    for n in range(10, 16):
        ip = f"{prefix}{n}"
        zone = zones[n % len(zones)]
        assign(T0 - 3600, ip, app, zone)
        hosts[ip] = [(T0 - 3600, None, app)]
for n in range(1, 4):
    ip = f"2600:1f18:1:2::{n}"
    assign(T0 - 3600, ip, "api", "us-east-1a")
    hosts[ip] = [(T0 - 3600, None, "api")]

# Floating IPs: change owner every 10 minutes, with a 2-minute unassigned gap.
floating = [f"10.0.9.{n}" for n in range(1, 9)]
cycle = ["api", "batch", "web"]
for i, ip in enumerate(floating):
    spans = []
    t = T0 - 600
    k = i
    while t < T0 + HOUR:
        app = cycle[k % len(cycle)]
        assign(t, ip, app, "us-east-1a")
        spans.append((t, t + 480, app))
        events.append({"ts": t + 480, "op": "unassign", "ip": ip})
        t += 600
        k += 1
    hosts[ip] = spans

events.sort(key=lambda e: e["ts"])
with open(os.path.join(HERE, "apps.jsonl"), "w") as f:
    f.write("# Sample metadata changelog: exact IPs change owner over time; CIDRs are fallbacks.\n")
    for e in events:
        f.write(json.dumps(e) + "\n")

# Flows.
internal = [ip for ip in hosts if "." in ip]
v6 = [ip for ip in hosts if ":" in ip]
public = ["52.216.8.10", "52.217.40.2", "3.5.1.20", "93.184.216.34", "151.101.1.69", "8.8.8.8"]
pairs = [("web", "api"), ("api", "db"), ("api", "cache"), ("api", "payments"), ("batch", "db"),
         ("web", "cache"), ("payments", "db"), ("batch", "api")]
by_app = {}
for ip, spans in hosts.items():
    if ip in floating or ":" in ip:
        continue
    by_app.setdefault(spans[0][2], []).append(ip)

def line(src, dst, start, bytes_, action="ACCEPT", status="OK"):
    proto = 6
    sport, dport = random.randint(32768, 60999), random.choice([443, 5432, 6379, 8080])
    packets = max(1, bytes_ // 1200)
    return f"2 {ACCOUNT} eni-{random.randint(0, 0xffffff):06x}0000 {src} {dst} {sport} {dport} {proto} {packets} {bytes_} {start} {start + 60} {action} {status}"

for minute in range(60):
    day = "2023/11/14" if minute < 45 else "2023/11/15"
    path = os.path.join(HERE, "flows", day)
    os.makedirs(path, exist_ok=True)
    start0 = T0 + minute * 60
    rows = []
    for _ in range(80):
        s = start0 + random.randint(0, 59)
        r = random.random()
        if r < 0.6:
            a, b = random.choice(pairs)
            rows.append(line(random.choice(by_app[a]), random.choice(by_app[b]), s, random.randint(200, 2_000_000),
                             "REJECT" if random.random() < 0.03 else "ACCEPT"))
        elif r < 0.8:
            rows.append(line(random.choice(floating), random.choice(by_app["db"]), s, random.randint(200, 500_000)))
        elif r < 0.9:
            rows.append(line(random.choice(internal), random.choice(public), s, random.randint(200, 5_000_000)))
        elif r < 0.95:
            rows.append(line(random.choice(public), random.choice(by_app["web"]), s, random.randint(60, 3000),
                             "REJECT" if random.random() < 0.5 else "ACCEPT"))
        else:
            rows.append(line(random.choice(v6), "2600:1f18:1:2::" + str(random.randint(1, 3)), s, random.randint(200, 90000)))
    if minute % 7 == 0:
        rows.append(f"2 {ACCOUNT} eni-0a1b2c3d0000 - - - - - - - {start0} {start0 + 60} - NODATA")
    if minute % 11 == 0:
        rows.append(f"2 {ACCOUNT} eni-0a1b2c3d0000 - - - - - - - {start0} {start0 + 60} - SKIPDATA")
    if minute % 13 == 5:
        rows.append(f"2 {ACCOUNT} eni-0bad 10.0.1.10 10.1.1.10 443 99999 6 1 40 {start0} {start0 + 60} ACCEPT OK")
    if minute % 17 == 3:
        rows.append(f"2 {ACCOUNT} eni-0bad 10.0.1.300 10.1.1.10 443 5432 6 1 40 {start0} {start0 + 60} ACCEPT OK")
    header = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status"
    name = f"{ACCOUNT}_vpcflowlogs_us-east-1_fl-0123456789abcdef0_{day.replace('/', '')}T{minute:02d}00Z_0001.log.gz"
    with gzip.open(os.path.join(path, name), "wt", compresslevel=9) as f:
        f.write(header + "\n")
        for row in rows:
            f.write(row + "\n")

# One file with a custom (version 5) format: its header line is the format.
fields = "version vpc-id subnet-id instance-id srcaddr dstaddr srcport dstport protocol tcp-flags type pkt-srcaddr pkt-dstaddr region az-id flow-direction traffic-path packets bytes start end action log-status"
path = os.path.join(HERE, "flows", "2023/11/15")
with gzip.open(os.path.join(path, f"{ACCOUNT}_vpcflowlogs_us-east-1_fl-0fedcba9876543210_20231115T0000Z_custom.log.gz"), "wt") as f:
    f.write(fields + "\n")
    for i in range(200):
        s = T0 + random.randint(0, HOUR - 60)
        a, b = random.choice(pairs)
        src, dst = random.choice(by_app[a]), random.choice(by_app[b])
        bytes_ = random.randint(200, 900_000)
        f.write(f"5 vpc-0a1 subnet-0b2 i-0c3 {src} {dst} {random.randint(32768, 60999)} 443 6 19 IPv4 {src} {dst} us-east-1 use1-az1 "
                f"{random.choice(['ingress', 'egress'])} {random.choice(['1', '-'])} {max(1, bytes_ // 1200)} {bytes_} {s} {s + 60} ACCEPT OK\n")
