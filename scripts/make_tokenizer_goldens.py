"""Build tests/goldens/tokenizer_openclip.json.gz: a large, varied, deterministic string set and open_clip's ids.

Why: our tokenizer must give open_clip's ids id-for-id (pretrained CLIP text towers are useless otherwise), and the
differences hide in text cleaning (ftfy's fixes of curly quotes, ligatures, mojibake, width, NFD accents, HTML
entities, control characters), not in ordinary ASCII. The strings are built here from fixed lists and a seeded RNG,
so a rerun gives the same file; the test reads only the file, never open_clip.

Run it with open_clip installed in a throw-away environment (never in the project's), e.g.:

    python3 -m venv /tmp/ocvenv && /tmp/ocvenv/bin/pip install open-clip-torch==3.3.0 ftfy==6.3.1
    /tmp/ocvenv/bin/python scripts/make_tokenizer_goldens.py            # writes the golden file, prints stats

The file holds ``texts``, ``ids`` (open_clip ``SimpleTokenizer.encode``: no sot/eot, no truncation), ``rows77``
(open_clip ``tokenize(text, 77)``, for every text longer than 75 tokens: truncated, so no padding) and ``meta``
(versions, and how many ids change when ``ftfy.fix_text`` is replaced by the identity).
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import unicodedata
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "goldens" / "tokenizer_openclip.json.gz"
SEED = 12

SUBJECTS = ["dog", "cat", "man", "woman", "child", "bird", "horse", "car", "bus", "train", "boat", "plane", "pizza",
            "cake", "guitar", "laptop", "bicycle", "tree", "house", "bridge", "mountain", "river", "street", "chef",
            "teacher", "robot", "skateboarder", "giraffe", "elephant", "zebra", "sandwich", "umbrella", "clock"]
ADJECTIVES = ["red", "small", "big", "old", "young", "happy", "wooden", "shiny", "blue", "green", "tiny", "yellow",
              "broken", "fluffy", "crowded", "empty", "vintage", "modern", "wet", "snowy", "bright", "dark"]
VERBS = ["sitting on", "running through", "standing next to", "jumping over", "lying under", "walking along",
         "looking at", "parked near", "flying above", "eating", "holding", "riding"]
PLACES = ["the beach", "a park", "the kitchen", "a busy street", "the snow", "a field", "the office", "a table",
          "the river bank", "a city square", "the forest", "a wooden fence"]
ACCENTED = ["café", "naïve", "résumé", "façade", "jalapeño", "crème brûlée", "São Paulo", "Zürich", "Ångström",
            "déjà vu", "piñata", "Björk", "Dvořák", "Łódź", "Ærøskøbing", "smørrebrød", "coöperate", "El Niño",
            "Mötley Crüe", "Beyoncé", "Pokémon", "über", "straße", "ÉCOLE", "Ça va", "Îles", "Øresund", "Šibenik"]
QUOTES = ["’", "‘", "“", "”", "„", "‚", "‹", "›", "«", "»", "`", "´", "′", "″", "＇", "＂", "ʼ", "ʻ"]
LIGATURES = {"fi": "ﬁ", "fl": "ﬂ", "ff": "ﬀ", "ffi": "ﬃ", "ffl": "ﬄ", "st": "ﬆ", "ij": "ĳ", "IJ": "Ĳ"}
ENTITIES = ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&#x27;", "&apos;", "&nbsp;", "&eacute;", "&Eacute;",
            "&EACUTE;", "&hellip;", "&mdash;", "&ndash;", "&copy;", "&reg;", "&trade;", "&#8217;", "&#x2019;",
            "&amp;amp;", "&amp;amp;amp;", "&AMP;", "&amp", "&lt", "&euro;", "&pound;", "&frac12;", "&deg;",
            "&#169;", "&#0;", "&#128512;", "&notanentity;", "&", "& ;", "&#;"]
EMOJI = ["🙂", "🐶", "🚀", "❤️", "❤", "👍🏽", "👨‍👩‍👧", "🇫🇷", "🇯🇵", "1️⃣", "✨", "🍕", "😂😂😂", "🏳️‍🌈", "☕",
         "✔️", "⚽", "🎉", "🤖", "👩🏻‍💻", "©️", "™", "♥", "★", "☀"]
SCRIPTS = ["日本語のテキスト", "中文字符测试", "한국어 문장", "東京タワー", "ｶﾀｶﾅ", "Ελληνικά", "кириллица", "العربية",
           "עברית", "हिन्दी", "ภาษาไทย", "Tiếng Việt", "ქართული", "Հայերեն", "ᚠᚢᚦ", "ⓐⓑⓒ", "𝐛𝐨𝐥𝐝", "𝔣𝔯𝔞𝔨",
           "Ｆｕｌｌ ｗｉｄｔｈ", "ＡＢＣ１２３", "ΣΊΣΥΦΟΣ", "İstanbul", "ǅungla", "ﬀoo"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2002", "\u2003", "\u2009", "\u200a", "\u3000", "\u2028",
          "\u2029", "\u200b", "\ufeff", "\u1680", "\u205f", "\x0b", "\x0c", "\x1c", "\x1f", "\u0085", " \n\t "]
CONTROLS = ["\x00", "\x07", "\x08", "\x7f", "\x1b[31m", "\x1b[0m", "\x1b", "\x80", "\x85", "\x91", "\x92", "\x93",
            "\x94", "\x96", "\x9d", "\u200e", "\u200f", "\u202e", "\u2060", "\ufffd", "\ufffc", "\u00ad", "\u034f"]
NUMBERS = ["2023", "3.14159", "1,000,000", "$19.99", "€5", "£3.50", "¥1000", "50%", "12:30", "2024-01-31",
           "+1 (555) 010-9999", "1st", "2nd", "3rd", "10th", "½", "¾", "²", "³", "①", "Ⅻ", "٣٤٥", "१२३", "１２３",
           "1e-5", "0x1F", "007", "-273.15°C", "6'2\"", "№5", "#42", "v2.0.1", "4K", "1080p", "9:16"]
PUNCT = ["...", "…", "—", "–", "‐", "-", "!!!", "?!", "¿", "¡", ";", ":", "•", "·", "/", "\\", "|", "~", "^", "*",
         "(", ")", "[", "]", "{", "}", "<", ">", "@", "#", "%", "_", "+", "=", "§", "¶", "†", "‰", "→", "⇒", "∞",
         "≠", "≤", "√", "∑", "×", "÷", "°", "℃", "™", "®", "©", "'", "\"", "''", "``", "'s", "'S", "'LL", "' s"]
CONTRACTIONS = ["don't", "I'm", "they'll", "we've", "you're", "it'd", "she's", "can't", "won't", "y'all",
                "rock'n'roll", "o'clock", "DON'T", "I'M", "'tis", "'90s", "dogs'"]
SPECIAL = ["<start_of_text>", "<end_of_text>", "<START_OF_TEXT>", "<end_of_text >", "< start_of_text>"]
# Unicode blocks for random fuzz: old, stable assignments (Unicode <= 6), so Python/regex upgrades don't move them.
BLOCKS = [(0x20, 0x7E), (0xA0, 0x17F), (0x180, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF),
          (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1E00, 0x1EFF), (0x2000, 0x206F), (0x2100, 0x214F),
          (0x2190, 0x22FF), (0x2460, 0x24FF), (0x2500, 0x257F), (0x3000, 0x30FF), (0x4E00, 0x4FFF),
          (0xAC00, 0xAD00), (0xFB00, 0xFB06), (0xFF01, 0xFF9F), (0x1F600, 0x1F64F), (0x0300, 0x036F)]


def caption(rng: random.Random) -> str:
    """An ordinary English caption, with random case and punctuation."""
    text = rng.choice([
        "a {adj} {sub} {verb} {place}", "{Adj} {sub} {verb} {place}.", "the {sub} is {verb} {place}",
        "two {adj} {sub}s and a {sub2} {verb} {place}", "A photo of a {adj} {sub}.", "{sub}, {sub2} and {place}",
        "there's a {adj} {sub} {verb} {place}!", "close-up of the {sub}'s {adj} face", "{sub} #{n} in {place}?",
    ]).format(adj=rng.choice(ADJECTIVES), Adj=rng.choice(ADJECTIVES).capitalize(), sub=rng.choice(SUBJECTS),
              sub2=rng.choice(SUBJECTS), verb=rng.choice(VERBS), place=rng.choice(PLACES), n=rng.randint(0, 999))
    return rng.choice([str.lower, str.upper, str.title, lambda s: s, lambda s: s, lambda s: s])(text)


def mojibake(text: str, rng: random.Random) -> str:
    """UTF-8 bytes read back in a legacy codec (the classic "cafÃ©"), sometimes twice."""
    for _ in range(rng.choice([1, 1, 1, 2])):
        codec = rng.choice(["cp1252", "latin-1", "cp1252", "mac_roman", "cp437"])
        text = text.encode("utf-8").decode(codec, errors="replace")
    return text


def insert(text: str, piece: str, rng: random.Random) -> str:
    """Put `piece` at a random word boundary, or glued to a word."""
    words = text.split(" ")
    i = rng.randrange(len(words) + 1)
    glue = rng.choice(["", " "])
    return " ".join(words[:i]) + glue + piece + glue + " ".join(words[i:]) if words else piece


def fuzz(rng: random.Random, n: int) -> str:
    """Random characters from stable Unicode blocks, mixed with spaces and ASCII."""
    out = []
    for _ in range(n):
        lo, hi = rng.choice(BLOCKS)
        out.append(chr(rng.randint(lo, hi)) if rng.random() < 0.7 else rng.choice([" ", "a", "e", "s", "1", "."]))
    return "".join(out)


def hand_picked() -> list[str]:
    """Ordinary captions and each category's edge cases, one by one."""
    base = ["the dog’s toy", "I’m here", "a “red” car", "ﬁsh market", "cafe\u0301 au lait", "na\u0131\u0308ve",
            "the dog's toy", "I'm here", 'a "red" car', "fish market", "café au lait", "mojibake: cafÃ©", "mojibake: café",
            "donâ€™t panic", "â€œquotedâ€\x9d", "Tom &amp; Jerry", "Tom &amp;amp; Jerry", "&lt;b&gt;bold&lt;/b&gt;",
            "<b>bold</b> &amp; <i>x</i>", "", " ", "   ", "\t\n", "\u200b", "\ufeff", "A", "a", "I", "'", "’",
            "’s", "’S", "it’ll", "you’re", "we’ve", "‘quoted’", "«guillemets»", "„German“", "ﬁ", "ﬂ", "ﬃ",
            "Ｈｅｌｌｏ", "ｈｅｌｌｏ　ｗｏｒｌｄ", "\x1b[1mbold\x1b[0m", "a\x00b", "line1\u2028line2", "Straße",
            "ΣΊΣΥΦΟΣ", "İ", "ǅ", "ß", "ẞ", "ﬀ", "\ud83d\ude00", "e\u0301\u0301", "\u0301", "x\u0308\u0304"]
    base += SPECIAL + CONTRACTIONS + NUMBERS + PUNCT + EMOJI + SCRIPTS + ENTITIES + ACCENTED
    base += [f"a{s}b" for s in SPACES] + [f"a{c}b" for c in CONTROLS] + [f"{q}word{q}" for q in QUOTES]
    base += [unicodedata.normalize(form, w) for w in ACCENTED for form in ("NFD", "NFKD", "NFKC")]
    base += [w.encode("utf-8").decode(codec, errors="replace") for w in ACCENTED + QUOTES + EMOJI
             for codec in ("cp1252", "latin-1")]
    return base


def long_texts(rng: random.Random) -> list[str]:
    """Past the 77-token context: many words, long numbers, one giant word, long emoji and CJK runs."""
    out = [" ".join(caption(rng) for _ in range(rng.randint(8, 20))) for _ in range(60)]
    out += [" ".join(["word"] * n) for n in (74, 75, 76, 77, 200)]
    out += ["".join(rng.choice("0123456789") for _ in range(n)) for n in (70, 75, 76, 80, 300)]
    out += ["a" * n for n in (100, 1000)] + ["🙂" * 40, "日本語" * 60, "ﬁ" * 90, "&amp;" * 80, "’s " * 80]
    return out


def build_texts() -> list[str]:
    rng = random.Random(SEED)
    texts = hand_picked() + long_texts(rng)
    pieces = [QUOTES, LIGATURES.values(), ENTITIES, EMOJI, SCRIPTS, SPACES, CONTROLS, NUMBERS, PUNCT, CONTRACTIONS,
              SPECIAL, ACCENTED]
    pieces = [list(p) for p in pieces]
    for _ in range(4000):  # ordinary captions
        texts.append(caption(rng))
    for _ in range(8000):  # captions with 1-3 random edits of the kinds ftfy repairs (or must leave alone)
        text = caption(rng)
        for _ in range(rng.randint(1, 3)):
            kind = rng.randrange(8)
            if kind == 0:  # curly apostrophes / quotes
                text = text.replace("'", rng.choice(QUOTES)) if "'" in text else insert(text, rng.choice(QUOTES), rng)
            elif kind == 1:  # ligatures
                pairs = [k for k in LIGATURES if k in text]
                text = text.replace(k := rng.choice(pairs), LIGATURES[k]) if pairs else insert(text, "ﬁ", rng)
            elif kind == 2:  # decomposed / compatibility accents
                text = unicodedata.normalize(rng.choice(["NFD", "NFKD"]), insert(text, rng.choice(ACCENTED), rng))
            elif kind == 3:
                text = mojibake(insert(text, rng.choice(ACCENTED + QUOTES + EMOJI), rng), rng)
            elif kind == 4:  # full-width
                text = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" and rng.random() < 0.7 else c for c in text)
            else:
                text = insert(text, rng.choice(rng.choice(pieces)), rng)
        texts.append(text)
    for _ in range(2500):
        texts.append(fuzz(rng, rng.randint(1, 40)))
    seen: set[str] = set()
    return [t for t in texts if not (t in seen or seen.add(t))]  # dedupe, keep order


def _encode_without_ftfy(tok, text: str) -> list[int] | None:
    """open_clip's ids with ``ftfy.fix_text`` replaced by the identity (None: not encodable at all)."""
    from open_clip import tokenizer as oc_tokenizer

    fix_text, oc_tokenizer.ftfy.fix_text = oc_tokenizer.ftfy.fix_text, lambda s: s
    try:
        return tok.encode(text)
    except UnicodeEncodeError:
        return None
    finally:
        oc_tokenizer.ftfy.fix_text = fix_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    import ftfy
    import open_clip
    from open_clip import tokenizer as oc_tokenizer

    tok = oc_tokenizer.SimpleTokenizer()
    texts, ids, rows77, failed = [], [], {}, []
    for text in build_texts():
        try:
            encoded = tok.encode(text)
        except UnicodeEncodeError:  # lone surrogates open_clip cannot encode either; left out
            failed.append(text)
            continue
        if len(encoded) > 75:
            rows77[str(len(texts))] = tok([text], 77)[0].tolist()  # full: no padding to strip
        texts.append(text)
        ids.append(encoded)
    differ_without_ftfy = sum(_encode_without_ftfy(tok, t) != i for t, i in zip(texts, ids))
    meta = {"open_clip": open_clip.__version__, "ftfy": ftfy.__version__, "python": sys.version.split()[0],
            "unicodedata": unicodedata.unidata_version, "seed": SEED, "num_texts": len(texts),
            "differ_without_ftfy": differ_without_ftfy, "left_out_unencodable": len(failed)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # ASCII JSON: \uXXXX escapes carry lone surrogates (ftfy joins surrogate pairs) that UTF-8 cannot.
    blob = json.dumps({"meta": meta, "texts": texts, "ids": ids, "rows77": rows77}, separators=(",", ":"))
    args.out.write_bytes(gzip.compress(blob.encode("ascii"), compresslevel=9, mtime=0))
    print(json.dumps(meta), f"-> {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
