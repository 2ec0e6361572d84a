"""A Faena worker in Python offering one custom kind, ``x.wordcount``.

    params  {"text": string, "pace_ms"?: 0..10000}
    output  {"words": int, "lines": int}
    progress {"done": lines counted, "total": lines}

``pace_ms`` pauses after each twentieth of the text: it makes drill jobs long
enough to cancel, drain or kill mid-way (as ``noop``'s ``delay_ms`` does).
"""

from __future__ import annotations

from typing import Any

from faena_worker import Job, PermanentError, main

MAX_PACE_MS = 10_000
STEPS = 20


def wordcount(job: Job) -> dict[str, Any]:
    p = job.params
    if not isinstance(p, dict) or not isinstance(p.get("text"), str):
        raise PermanentError('x.wordcount params must be {"text": string}')
    unknown = sorted(set(p) - {"text", "pace_ms"})
    if unknown:
        raise PermanentError(f"x.wordcount params: unknown field {unknown[0]!r}")
    pace = p.get("pace_ms", 0)
    if not isinstance(pace, int) or isinstance(pace, bool) or not 0 <= pace <= MAX_PACE_MS:
        raise PermanentError(f"x.wordcount params: pace_ms must be an integer 0..={MAX_PACE_MS}")
    lines = p["text"].splitlines()
    step = max(1, -(-len(lines) // STEPS))
    words = 0
    for start in range(0, len(lines), step):
        job.check()
        words += sum(len(line.split()) for line in lines[start:start + step])
        job.progress({"done": min(start + step, len(lines)), "total": len(lines)})
        if pace:
            job.sleep(pace / 1000)
    return {"words": words, "lines": len(lines)}


if __name__ == "__main__":
    main({"x.wordcount": wordcount})
