"""Which submissions of one assignment share their code: copydetect's winnowing fingerprints
(the method of MOSS) over each student's answer cells, less the release's own text.

A high similarity is a reason to read two notebooks side by side, not a verdict: short answers
to the same exercise can look alike. The report lists pairs above a threshold, most similar first.
"""

import io

NOISE_TOKENS = 25  # copydetect's defaults: matches shorter than this are ignored ...
GUARANTEE_TOKENS = 30  # ... and every match this long is found
THRESHOLD = 0.8  # a pair is listed when either side shares this fraction of its tokens


def fingerprint(code: str, boilerplate=None):
    from copydetect import CodeFingerprint
    return CodeFingerprint("answers.py", NOISE_TOKENS, GUARANTEE_TOKENS - NOISE_TOKENS + 1,
                           boilerplate=boilerplate, fp=io.StringIO(code), language="python")


def boilerplate_hashes(code: str):
    """Every k-gram hash of ``code`` (as copydetect's own detector computes its boilerplate)."""
    import numpy as np
    from copydetect.utils import filter_code, hashed_kgrams
    filtered, _ = filter_code(code, "release.py", "python")
    return np.unique(hashed_kgrams(filtered, k=NOISE_TOKENS))


def similar_pairs(answers: dict, release: str = "", threshold: float = THRESHOLD) -> list:
    """``[(student a, student b, share of a, share of b)]`` for every pair of ``answers``
    (``{student: answer code}``) whose overlap, less the ``release`` text, reaches ``threshold``."""
    from copydetect import compare_files
    boilerplate = boilerplate_hashes(release) if release.strip() else None
    prints = {s: fingerprint(code, boilerplate) for s, code in sorted(answers.items()) if code.strip()}
    pairs, students = [], list(prints)
    for i, a in enumerate(students):
        for b in students[i + 1:]:
            _, (share_a, share_b), _ = compare_files(prints[a], prints[b])
            if max(share_a, share_b) >= threshold:
                pairs.append((a, b, float(share_a), float(share_b)))
    return sorted(pairs, key=lambda p: -max(p[2], p[3]))
