from hybridcl.evaluation.postprocess import extract_code


def test_extract_code_takes_the_first_fenced_block():
    assert extract_code("Here:\n```python\ndef f():\n    return 1\n```\nmore ```x\ny```") == "def f():\n    return 1"
    assert extract_code("```\nfunction f() {}\n") == "function f() {}"  # unterminated fence: to the end
    assert extract_code("def f():\n    return 1") == "def f():\n    return 1"  # no fence: unchanged
    assert extract_code("a ``` b") == "a ``` b"  # an inline triple backtick is no fence
