"""A pretend user for ``tests/test_chaos.py``: the ``exec:`` presenter program of every chaos agent.

    python tests/chaos_presenter.py --seed SEED --log FILE   (the prompt's JSON on stdin)

The answer and the delay before it are drawn from ``Random(f"{SEED}:{title}")`` — the
title carries the technician's Idempotency-Key, which the run's seed determines, while the
bridge's prompt ids are new every run — so a run's choices are reproducible from its seed
(the timing is real, so the run as a whole is not), and a prompt shown again after an agent
restart gets the same answer. Answers:
``approve``, ``deny``, ``dismiss``, ``none`` (exit without output after the delay: the prompt
waits) and ``hang`` (never answer; the agent withdraws the dialog on cancel or expiry, and
the kernel kills it with the agent).

Each run appends one JSON line to FILE: prompt id, this pid, the agent's pid, the answer.
Only the standard library, so it starts in a few milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

ANSWERS = ("approve", "deny", "dismiss", "none", "hang")
WEIGHTS = (36, 22, 14, 16, 12)
MIN_DELAY_S, MAX_DELAY_S = 0.3, 6.0


def choose(seed: str, title: str) -> tuple[str, float]:
    """The pretend user's answer to this prompt and how long they take to give it."""
    rng = random.Random(f"{seed}:{title}")
    answer = rng.choices(ANSWERS, WEIGHTS)[0]
    return answer, rng.uniform(MIN_DELAY_S, MAX_DELAY_S)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    prompt = json.load(sys.stdin)
    answer, delay = choose(args.seed, prompt.get("title") or prompt["prompt_id"])
    line = {
        "prompt_id": prompt["prompt_id"],
        "pid": os.getpid(),
        "agent_pid": os.getppid(),
        "answer": answer,
        "delay_s": round(delay, 3),
        "at": time.time(),
    }
    with open(args.log, "a") as f:
        f.write(json.dumps(line) + "\n")
    if answer == "hang":
        time.sleep(600)
        return 0
    time.sleep(delay)
    if answer != "none":
        print(answer, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
