"""A pretend endpoint user for the demo (``exec:`` presenter): reads the prompt's JSON on
stdin, "thinks" for a few seconds, then approves, denies — or walks away (prints nothing,
so the prompt waits and the console shows "delivered, not answered" until it expires)."""

from __future__ import annotations

import json
import random
import sys
import time


def main() -> int:
    prompt = json.loads(sys.stdin.read() or "{}")
    rng = random.Random(prompt.get("prompt_id"))
    time.sleep(rng.uniform(3, 12))
    answer = rng.choices(["approve", "deny", ""], weights=[6, 2, 2])[0]
    if answer:
        print(answer, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
