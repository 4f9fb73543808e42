"""The course's autograder: nbgrader for the release and the gradebook, our own grading.

    python -m grader validate|release|autograde ...   (``make assignments``, ``make autograde``)

Modules, in the order a submission meets them: ``course`` (the nbgrader course directory:
validate, release, what the gradebook recorded), ``submissions`` (reading a student's folder
without following links, into the grader's own copy), ``grading`` (one notebook: answers in the
sandbox, tests here), ``sandbox`` (bubblewrap, limits, the student's process), ``harness`` (the
program that runs *inside* the sandbox), ``proxies`` (the student's objects as the tests see
them), ``table`` (the score table), ``exports`` (LMS CSV, Gradescope ``results.json``,
similarity report), ``autograde`` (a class, in parallel) and ``cli``. TRUST.md says what runs
where and what each side trusts.
"""
