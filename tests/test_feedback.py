from proctor.sandbox_pool.feedback import RETRY, feedback_text
from proctor.sandbox_pool.judge import TestResult, Verdict


def test_passing_verdict_has_no_feedback():
    assert feedback_text(Verdict("pass", [TestResult("pass", True)])) == ""


def test_rlef_format_for_each_status():
    v = Verdict("fail", [
        TestResult("pass", True, input="1\n", expected="2\n"),
        TestResult("wrong_answer", True, detail="3\n", input="1 2\n", expected="4\n"),
        TestResult("timeout", True, input="5\n", expected="6\n"),
        TestResult("memory", True, input="7\n", expected="8\n"),
    ])
    text = feedback_text(v)
    lines = text.splitlines()
    assert lines[0] == "Your code failed the following tests:"
    assert "- input `1 2` failed: Expected output `4` but got `3`" in text
    assert "- input `5` failed: Execution took too long." in text
    assert "- input `7` failed: Out of memory." in text
    assert "input `1`" not in text  # the passing test is not listed
    assert text.endswith(RETRY)


def test_runtime_error_shows_the_trace_and_assert_shows_the_test():
    v = Verdict("fail", [TestResult("runtime_error", True, input="assert f(1) == 2",
                                    detail='  File "solution.py", line 3\nNameError: name \'List\' is not defined')])
    text = feedback_text(v)
    assert "- input `assert f(1) == 2` failed:" in text and "NameError: name 'List' is not defined" in text


def test_length_is_capped_and_retry_kept():
    huge = "x" * 100_000
    v = Verdict("fail", [TestResult("wrong_answer", True, detail=huge, input=huge, expected=huge)] * 10)
    text = feedback_text(v, max_chars=2500)
    assert len(text) <= 2500 and text.endswith(RETRY)
    assert "... and 7 more." in text and "(truncated)" in text
