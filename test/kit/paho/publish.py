"""Publishes with Eclipse paho-mqtt (Debian's python3-paho-mqtt), one new client object per message,
as a battery device does that wakes, publishes and sleeps: every connection starts at packet id 1.

usage: publish.py PORT CLIENT_ID USERNAME PASSWORD TOPIC QOS PAYLOAD [PAYLOAD ...]
Prints one JSON line per message: {"mid": packet id, "published": acknowledged}.
"""
import json
import sys

import paho.mqtt.client as mqtt

port, client_id, username, password, topic, qos = sys.argv[1:7]
for payload in sys.argv[7:]:
    client = mqtt.Client(client_id=client_id, clean_session=True)
    client.username_pw_set(username, password)
    client.connect("127.0.0.1", int(port), keepalive=30)
    client.loop_start()
    info = client.publish(topic, payload, qos=int(qos))
    info.wait_for_publish(timeout=10)
    print(json.dumps({"mid": info.mid, "published": info.is_published()}), flush=True)
    client.disconnect()
    client.loop_stop()
