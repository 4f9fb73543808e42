"""nbgrader settings for the course's assignments (this folder is the nbgrader course directory).

The grader (``python -m grader``: ``make assignments``, ``make autograde``) loads this file and sets the course
root to this folder; running nbgrader's own commands from inside this folder reads it too.
"""

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

# Every solution region becomes this stub in the student version, so an unanswered task fails
# loudly instead of silently passing a test.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# A test cell a student deleted is put back from the gradebook and run, rather than scored as if
# it were never there (grader/grading.py does the same when it grades).
c.OverwriteCells.add_missing_cells = True

# Seconds one cell may run while `validate` runs the sources (assignment 4 trains a small MLP).
# Autograding does not run nbgrader's kernel: its limits are grader/sandbox.py's Limits
# (`autograde --cell-timeout/--call-timeout/--notebook-timeout`, a notebook's metadata.grading.call_s).
c.Execute.timeout = 300

