"""A one-sample call's text sent on as it is decoded: never more than the final text holds."""

from __future__ import annotations

from orchestra.backends.local import _TextStream

SPELLING = {1: "Hello", 2: " wor", 3: "ld", 4: " #", 5: "##", 6: " more", 7: "\ufffd"}


class Spelling:
    """A tokenizer whose token i decodes to SPELLING[i]."""

    def decode(self, tokens, skip_special_tokens=True):
        return "".join(SPELLING[t] for t in tokens)


def test_text_is_sent_in_pieces_and_a_stop_string_is_never_sent():
    sent: list[str] = []
    stream = _TextStream(Spelling(), ("###",), sent.append)
    for end in range(1, 7):
        stream.update(tuple(range(1, end + 1)))
    assert "".join(sent) == "Hello world "  # what the engine's text is: cut before the stop string
    assert len(sent) > 1


def test_a_half_decoded_character_waits_for_the_next_token():
    sent: list[str] = []
    stream = _TextStream(Spelling(), (), sent.append)
    stream.update((1, 7))
    assert sent == ["Hello"]
