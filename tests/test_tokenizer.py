"""Golden tests for alignclip's CLIP BPE tokenizer.

The hand-picked id lists below were produced by open_clip's own ``SimpleTokenizer`` (open_clip/tokenizer.py unzipped
from open_clip_torch-3.3.0-py3-none-any.whl and run from /tmp, not installed) with ftfy 6.3.1. The bulk check uses
tests/goldens/tokenizer_openclip.json.gz: ~15k varied strings and open_clip 3.3's ids, made by
scripts/make_tokenizer_goldens.py.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import pickle
import random
import string
import sys
from pathlib import Path

import ftfy
import numpy as np
import pytest
import torch

import alignclip
from alignclip import tokenizer as tokenizer_module
from alignclip.tokenizer import Tokenizer, get_tokenizer

GOLDENS = Path(__file__).parent / "goldens" / "tokenizer_openclip.json.gz"
SOT, EOT = 49406, 49407

GOLDEN_ENCODE: dict[str, list[int]] = {
    "a diagram": [320, 22697],
    "hello world": [3306, 1002],
    "": [],
    "   ": [],
    "A Photo of a DOG.": [320, 1125, 539, 320, 1929, 269],
    "  lots   of\tspaces\nand\r\nnewlines  ": [2958, 539, 9006, 537, 1218, 3418],
    "Hello, world!!! What's up? I'm fine; they'll go, we've seen, you're ok, it'd do.": [
        3306, 267, 1002, 995, 768, 568, 705, 286, 328, 880, 3797, 282, 889, 1342, 861, 267, 649, 1200, 2041, 267,
        592, 982, 2481, 267, 585, 1896, 818, 269],
    "the year 2023 costs $19.99 (approx. 3.5%) -- 1,000,000 items #42 @home": [
        518, 935, 273, 271, 273, 274, 7628, 259, 272, 280, 269, 280, 280, 263, 18266, 269, 274, 269, 276, 16063,
        2432, 272, 267, 271, 271, 271, 267, 271, 271, 271, 6207, 258, 275, 273, 287, 1137],
    "3.14159 and 007 and 1e-5": [274, 269, 272, 275, 272, 276, 280, 537, 271, 271, 278, 537, 272, 324, 268, 276],
    "café naïve résumé Über straße": [15304, 1097, 35689, 563, 29106, 7054, 4166, 6522, 1516, 1894, 127, 253, 324],
    "日本語のテキスト 中文 한국어": [
        39121, 44353, 34002, 252, 21575, 2429, 228, 47121, 32421, 486, 19759, 255, 29032, 485, 15197, 250, 31871,
        255, 31625, 368],
    "emoji 🙂🐶🚀 and ♥ ★": [16327, 32006, 14466, 13542, 537, 3405, 10643],
    "Tom &amp; Jerry &lt;3 &quot;quoted&quot; &#39;single&#39; &amp;amp;": [
        2435, 261, 9164, 283, 274, 257, 27706, 257, 568, 17005, 262, 261],
    "<start_of_text> inside <end_of_text> text": [49406, 2912, 49407, 4160],
    "don't STOP believin' -- rock'n'roll": [847, 713, 1691, 4972, 530, 262, 2432, 2172, 262, 333, 262, 3341],
    "e-mail: someone@example.com, url: https://www.example.org/path?q=1&x=2": [
        324, 268, 2614, 281, 2100, 287, 6228, 269, 2464, 267, 23464, 281, 30901, 12441, 9667, 269, 6228, 269, 5593,
        270, 5035, 286, 336, 284, 272, 261, 343, 284, 273],
    "supercalifragilisticexpialidocious antidisestablishmentarianism": [
        1642, 2857, 13093, 2076, 5868, 26850, 835, 639, 38466, 3120, 4262, 7726, 12658, 1585, 44351],
    "a red circle on a blue square, next to a small green triangle": [
        320, 736, 7117, 525, 320, 1746, 3999, 267, 1131, 531, 320, 2442, 1901, 14615],
    "Ελληνικά кириллица العربية": [
        138, 113, 138, 119, 138, 119, 138, 115, 138, 121, 138, 117, 138, 118, 138, 361, 27152, 16701, 16370, 29503,
        119, 47611, 16701, 141, 228, 27080, 12973, 18843, 10948, 16378, 12046, 20915],
    "tabs\tand\u00a0nbsp\u2003emspace": [29163, 537, 6459, 4393, 908, 2138],
    "ALL CAPS SHOUTING AND MiXeD cAsE": [615, 23185, 26464, 537, 6780, 2068],
    "...,,,;;;!!!???---___***": [3002, 21340, 11, 34824, 26, 11194, 40017, 2154, 42718, 62, 7829],
}

# open_clip's raw decode(encode(s)) (special tokens spelled out, trailing space).
GOLDEN_DECODE: dict[str, str] = {
    "a diagram": "a diagram ",
    "café naïve résumé Über straße": "café naïve résumé über straße ",
    "emoji 🙂🐶🚀 and ♥ ★": "emoji 🙂🐶🚀 and ♥ ★ ",
    "<start_of_text> inside <end_of_text> text": "<start_of_text>inside <end_of_text>text ",
    "Tom &amp; Jerry &lt;3 &quot;quoted&quot; &#39;single&#39; &amp;amp;": "tom & jerry < 3 \" quoted \" 's ingle ' & ",
    "3.14159 and 007 and 1e-5": "3 . 1 4 1 5 9 and 0 0 7 and 1 e - 5 ",
}

# Text ftfy changes, with open_clip's ids (which run ftfy.fix_text first).
FTFY_GOLDEN: dict[str, list[int]] = {
    "“curly quotes” and ‘single’": [257, 20795, 5808, 257, 537, 568, 17005, 262],
    "ﬁne ligature": [3797, 19915, 4490],
    "ＦＵＬＬ width": [1476, 23571],
    "mojibake: cafÃ©": [617, 3252, 11878, 281, 15304],
}

# Ordinary captions, which gave other ids than open_clip's when ftfy was optional and absent, and the
# plain spelling that open_clip (through ftfy) tokenizes them as.
ORDINARY = {"the dog’s toy": "the dog's toy", "I’m here": "I'm here", "a “red” car": 'a "red" car',
            "ﬁsh market": "fish market", "cafe\u0301 au lait": "café au lait", "mojibake: cafÃ©": "mojibake: café"}

LONG_OBJECTS = "a photo of " + " and ".join(f"object {i}" for i in range(60))  # 232 BPE tokens
# open_clip tokenize(LONG_OBJECTS, 77)[0] and tokenize(LONG_OBJECTS, 16)[0]
LONG_OBJECTS_77 = [49406, 320, 1125, 539, 14115, 271, 537, 14115, 272, 537, 14115, 273, 537, 14115, 274, 537, 14115,
                   275, 537, 14115, 276, 537, 14115, 277, 537, 14115, 278, 537, 14115, 279, 537, 14115, 280, 537,
                   14115, 272, 271, 537, 14115, 272, 272, 537, 14115, 272, 273, 537, 14115, 272, 274, 537, 14115, 272,
                   275, 537, 14115, 272, 276, 537, 14115, 272, 277, 537, 14115, 272, 278, 537, 14115, 272, 279, 537,
                   14115, 272, 280, 537, 14115, 273, 49407]
LONG_OBJECTS_16 = [49406, 320, 1125, 539, 14115, 271, 537, 14115, 272, 537, 14115, 273, 537, 14115, 274, 49407]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return get_tokenizer()


def test_vocab_and_special_ids(tok: Tokenizer) -> None:
    assert tok.vocab_size == 49408
    assert (tok.sot_token_id, tok.eot_token_id) == (SOT, EOT)
    assert alignclip.get_tokenizer is get_tokenizer


@pytest.mark.parametrize("text", list(GOLDEN_ENCODE))
def test_encode_matches_open_clip(tok: Tokenizer, text: str) -> None:
    assert tok.encode(text) == GOLDEN_ENCODE[text]


@pytest.mark.parametrize("text", list(FTFY_GOLDEN))
def test_ftfy_dependent_text(tok: Tokenizer, text: str) -> None:
    assert tok.encode(text) == FTFY_GOLDEN[text]


def test_anchor_rows_are_zero_padded(tok: Tokenizer) -> None:
    out = tok(["a diagram", "hello world", ""])
    assert out.dtype == torch.long and out.shape == (3, 77)
    assert out[0, :4].tolist() == [SOT, 320, 22697, EOT] and not out[0, 4:].any()
    assert out[1, :4].tolist() == [SOT, 3306, 1002, EOT] and not out[1, 4:].any()
    assert out[2, :2].tolist() == [SOT, EOT] and not out[2, 2:].any()


def test_single_string_and_context_override(tok: Tokenizer) -> None:
    assert tok("a diagram").shape == (1, 77)
    assert tok("a diagram", context_length=8)[0].tolist() == [SOT, 320, 22697, EOT, 0, 0, 0, 0]
    assert get_tokenizer(32)(["a", "b"]).shape == (2, 32)
    assert tok([]).shape == (0, 77)


def test_truncation_keeps_eot_last(tok: Tokenizer) -> None:
    assert tok(LONG_OBJECTS)[0].tolist() == LONG_OBJECTS_77
    assert tok(LONG_OBJECTS, context_length=16)[0].tolist() == LONG_OBJECTS_16
    words = tok(" ".join(["word"] * 100))[0].tolist()
    assert words == [SOT] + [2653] * 75 + [EOT]
    # Exactly full (75 words + sot + eot = 77) is not truncated; one more word is.
    assert tok(" ".join(["word"] * 75))[0].tolist() == words
    assert tok(" ".join(["word"] * 74))[0, -2:].tolist() == [EOT, 0]


def test_batch_rows_equal_single_rows(tok: Tokenizer) -> None:
    texts = list(GOLDEN_ENCODE)
    batch = tok(texts)
    for i, text in enumerate(texts):
        ids = GOLDEN_ENCODE[text]
        assert batch[i, : len(ids) + 2].tolist() == [SOT] + ids + [EOT]
        assert not batch[i, len(ids) + 2 :].any()


@pytest.mark.parametrize("text", list(GOLDEN_DECODE))
def test_raw_decode_matches_open_clip(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text), skip_special_tokens=False) == GOLDEN_DECODE[text]


def test_decode_padded_row(tok: Tokenizer) -> None:
    row = tok(["A photo of a café, 🙂!"])[0]
    assert tok.decode(row) == "a photo of a café , 🙂!"  # "🙂!" is one punctuation-run word
    assert tok.decode(row.numpy()) == tok.decode(row.tolist())
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([49408])


def test_bad_context_length() -> None:
    with pytest.raises(ValueError, match="context_length"):
        get_tokenizer(1)
    with pytest.raises(ValueError, match="context_length"):
        get_tokenizer()("a", context_length=1)


def test_pickle_is_cheap_and_equivalent(tok: Tokenizer) -> None:
    tok16 = get_tokenizer(16)
    blob = pickle.dumps(tok16)
    assert len(blob) < 200  # no vocab inside: workers use the per-process cached vocab
    clone = pickle.loads(blob)
    texts = ["a diagram", LONG_OBJECTS, "café 🙂"]
    assert torch.equal(clone(texts), tok16(texts))
    assert clone.context_length == 16


def test_vocab_loaded_once_and_word_cache_used(tok: Tokenizer) -> None:
    tok.encode("a zebra")
    before = tokenizer_module._word_ids.cache_info()
    tok.encode("a zebra a zebra")
    after = tokenizer_module._word_ids.cache_info()
    assert after.hits - before.hits == 4 and after.misses == before.misses
    assert tokenizer_module._vocab() is tokenizer_module._vocab()


def test_ids_within_vocab(tok: Tokenizer) -> None:
    out = tok(list(GOLDEN_ENCODE) + list(FTFY_GOLDEN))
    assert int(out.min()) >= 0 and int(out.max()) < tok.vocab_size
    assert np.all((out[:, 0] == SOT).numpy())


@pytest.fixture(scope="module")
def goldens() -> dict:
    return json.loads(gzip.decompress(GOLDENS.read_bytes()))


def test_goldens_are_large_and_from_open_clip(goldens: dict) -> None:
    meta = goldens["meta"]
    assert meta["open_clip"] == "3.3.0" and meta["num_texts"] == len(goldens["texts"]) == len(goldens["ids"]) > 10_000
    assert meta["differ_without_ftfy"] > 1_000  # the set exercises ftfy's fixes, not only plain ASCII
    assert len(goldens["rows77"]) > 50


def test_encode_matches_open_clip_goldens(tok: Tokenizer, goldens: dict) -> None:
    ours = [tok.encode(text) for text in goldens["texts"]]
    wrong = [(text, ids, mine) for text, ids, mine in zip(goldens["texts"], goldens["ids"], ours) if mine != ids]
    assert not wrong, f"{len(wrong)} of {len(goldens['texts'])} differ from open_clip, e.g. {wrong[:3]}"


def test_rows_match_open_clip_tokenize_goldens(tok: Tokenizer, goldens: dict) -> None:
    """Every row of one batch: open_clip's truncated tokenize() rows for long texts, sot+ids+eot+zeros otherwise."""
    batch = tok(goldens["texts"]).tolist()
    for i, (row, ids) in enumerate(zip(batch, goldens["ids"])):
        expected = goldens["rows77"].get(str(i)) or [SOT] + ids + [EOT] + [0] * (75 - len(ids))
        assert row == expected, goldens["texts"][i]


@pytest.mark.parametrize("text", list(ORDINARY))
def test_ordinary_captions_tokenize_as_their_plain_spelling(tok: Tokenizer, goldens: dict, text: str) -> None:
    golden = dict(zip(goldens["texts"], goldens["ids"]))
    assert tok.encode(text) == golden[text] == golden[ORDINARY[text]]


def test_ascii_shortcut_agrees_with_ftfy(goldens: dict) -> None:
    """fix_text skips ftfy on printable ASCII without '&': check that ftfy really is the identity there."""
    rng = random.Random(0)
    alphabet = string.printable.replace("&", "")  # includes tabs/newlines, which must take the ftfy path
    texts = goldens["texts"] + ["".join(rng.choices(alphabet, k=rng.randint(0, 60))) for _ in range(3000)]
    shortcut = 0
    for text in texts:
        assert tokenizer_module.fix_text(text) == ftfy.fix_text(text), repr(text)
        shortcut += text.isascii() and text.isprintable() and "&" not in text
    assert shortcut > 2000


def test_missing_ftfy_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken install without ftfy fails on import with the fix, rather than silently giving other ids."""
    monkeypatch.setitem(sys.modules, "ftfy", None)  # makes `import ftfy` raise ImportError
    spec = importlib.util.spec_from_file_location("alignclip_tokenizer_without_ftfy", tokenizer_module.__file__)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # a fresh copy: the real module stays imported and intact
    with pytest.raises(ImportError, match=r"needs ftfy>=6\.3 .*pip install 'ftfy>=6\.3'"):
        spec.loader.exec_module(module)


def test_ftfy_is_a_declared_dependency() -> None:
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"ftfy>=6.3",' in pyproject
    assert tuple(int(p) for p in ftfy.__version__.split(".")[:2]) >= (6, 3)  # 6.0-6.2 differ on some mojibake
