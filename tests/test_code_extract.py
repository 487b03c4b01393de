from proctor.sandbox_pool.code import extract_code


def test_first_parsing_python_block():
    reply = "Here:\n```python\ndef f(x):\n    return x\n```\nUsage:\n```python\nprint(f(1))\n```"
    assert extract_code(reply) == "def f(x):\n    return x\n"


def test_entry_point_picks_the_block_that_defines_it():
    reply = "```python\nimport math\n```\n```py\ndef area(r):\n    return math.pi * r * r\n```"
    assert extract_code(reply, "area").startswith("def area")
    # Valid code without the entry point is still code (it fails its tests), not an invalid turn.
    assert extract_code(reply, "volume") == "import math\n"


def test_no_valid_code_is_none():
    assert extract_code("I cannot do that.") is None
    assert extract_code("```python\ndef f(:\n```") is None
    assert extract_code("```\n\n```") is None
    assert extract_code("```javascript\nfunction f() {}\n```") is None


def test_unterminated_block_still_counts():
    assert extract_code("```python\nprint(1)\n") == "print(1)\n"
