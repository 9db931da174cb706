from lit_vine.steps import split_lines, step_token_ends


def test_split_lines_newline_starts_the_next_step():
    text = "\n\nA=1\nB=2\n#### 3"
    # leading blank lines belong to the first step; the answer to the last; "\n" opens a step
    assert split_lines(text) == ["\n\nA=1", "\nB=2\n#### 3"]


def test_split_lines_blank_line_is_a_step_of_its_own():
    assert split_lines("A=1\n\nB=2\n#### 3") == ["A=1", "\n", "\nB=2\n#### 3"]


def test_split_lines_blank_lines_before_the_answer_join_the_last_step():
    assert split_lines("A=1\nB=2\n\n#### 3") == ["A=1", "\nB=2\n\n#### 3"]


def test_split_lines_single_and_empty():
    assert split_lines("") == []
    assert split_lines("#### 5") == ["#### 5"]  # no "\n#### ": the answer line is the only step
    assert split_lines("x\n") == ["x", "\n"]
    assert split_lines("A=1\n#### 1\n#### 2") == ["A=1\n#### 1\n#### 2"]  # the first answer prefix counts


def test_step_token_ends_on_real_tokenizer(tiny):
    _, tok = tiny
    response = "21-2=19\n19*5=95\n95+4=99\n#### 99"
    ids = tok(response, add_special_tokens=False).input_ids
    steps = split_lines(response)
    ends = step_token_ends(ids, steps, tok)
    assert len(ends) == 3 and ends[-1] == len(ids)
    decoded = [tok.decode(ids[:e]) for e in ends]
    # each state is exactly the text of the steps so far: it ends before the line break
    assert decoded == ["21-2=19", "21-2=19\n19*5=95", response]


def test_step_token_ends_boundary_inside_a_token_moves_to_token_end(tiny):
    _, tok = tiny
    # "ab" is one token for this purpose: fake a tokenizer whose tokens are 2 chars long
    class Pairs:
        def decode(self, ids, skip_special_tokens=True):
            return "".join("xy"[i % 2] * 2 for i in ids)

    ids = [0, 1, 0, 1]  # "xxyyxxyy"
    ends = step_token_ends(ids, ["xxy", "yxxyy"], Pairs())
    # the boundary after 3 chars falls inside token 1, so the first state is 2 tokens long
    assert ends == [2, 4]
