"""One JSON-RPC call to a node inside a network namespace (run there with `ip netns exec`):
url, cookie file, method, JSON list of parameters; prints the reply's JSON. Standard library
only, so each call starts fast."""

import base64
import json
import sys
import urllib.request

url, cookie, method, params = sys.argv[1:5]
auth = base64.b64encode(open(cookie, "rb").read()).decode()
req = urllib.request.Request(url, json.dumps({"method": method, "params": json.loads(params)}).encode(),
                             headers={"Authorization": f"Basic {auth}"})
with urllib.request.urlopen(req, timeout=60) as resp:
    print(resp.read().decode())
