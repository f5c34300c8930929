# Black-box scenarios: each tests/scenarios/<name>.py runs against a fresh
# agent and simulator (see tests/scenarios/harness.py).
