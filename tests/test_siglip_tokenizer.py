"""SigLIP folders bring their own SentencePiece vocabulary: eval/embed use it, through transformers' classes.

The vocabularies are trained here, offline, from a few KB of captions (sentencepiece can do that in well under a
second); the references are sentencepiece's own ids and transformers' SiglipModel on transformers' tokenization."""
from __future__ import annotations

import re
import string
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch
import transformers

import alignclip
from alignclip.data.synthetic import SyntheticShapes
from alignclip.evaluation.features import default_tokenizer
from alignclip.folder_tokenizer import FolderTokenizer
from test_eval_cli import cli, one_line_error

CAPTIONS = [c for i in range(200) for c in SyntheticShapes(200, seed=1, image_size=32).captions_for(i, 2)]
TEXTS = ["A small red circle on the left.", "two BLUE squares, at the top!", "a tiny crimson disc"]


def train_spm(tmp_path: Path, **options) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CAPTIONS))
    prefix = tmp_path / "spm"
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(prefix), minloglevel=2, **options)
    return prefix.with_suffix(".model")


def siglip_folder(tmp_path: Path, vocab_size: int, context_length: int = 16) -> Path:
    """A random SiglipModel whose text tower matches the vocabulary, saved as transformers saves it."""
    torch.manual_seed(0)
    hf = transformers.SiglipModel(transformers.SiglipConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        text_config={"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": context_length, "projection_size": 32}))
    hf.save_pretrained(tmp_path / "siglip")
    return tmp_path / "siglip"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SigLIP's layout: a unigram SentencePiece model as spiece.model (pad = eos = 1, as SiglipTokenizer's)."""
    tmp = tmp_path_factory.mktemp("siglip_tok")
    model_file = train_spm(tmp, vocab_size=64, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                           hard_vocab_limit=False)
    tokenizer = transformers.SiglipTokenizer(vocab_file=str(model_file))
    out = siglip_folder(tmp, len(tokenizer))
    tokenizer.save_pretrained(out)
    return out


def canonical(text: str) -> str:
    """SigLIP's text canonicalisation, by hand: lower-case, no punctuation, single spaces."""
    return re.sub(r"\s+", " ", text.lower().translate(str.maketrans("", "", string.punctuation))).strip()


def test_folder_vocabulary_gives_sentencepiece_ids(folder: Path) -> None:
    model = alignclip.load_checkpoint(folder)
    tokenizer = default_tokenizer(model)
    assert isinstance(tokenizer, FolderTokenizer)
    tokens = tokenizer(TEXTS)
    assert tokens.shape == (3, model.context_length) and tokens.dtype == torch.long
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    eos = sp.piece_to_id("</s>")
    for row, text in zip(tokens.tolist(), TEXTS):
        ids = sp.encode(canonical(text))[: model.context_length - 1] + [eos]
        assert row == ids + [eos] * (model.context_length - len(ids))  # SigLIP pads with eos


def test_embed_uses_the_folder_vocabulary(folder: Path, tmp_path: Path) -> None:
    data = SyntheticShapes(4, seed=2, image_size=32)
    rows = []
    for i in range(4):
        data.raw(i)[0].save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png\t{data.captions_for(i, 1)[0]}\n")
    (tmp_path / "pairs.tsv").write_text("filepath\ttitle\n" + "".join(rows))
    assert cli(["embed", folder, "--dataset", f"tsv:{tmp_path / 'pairs.tsv'}", "--out", tmp_path / "emb"]) == 0
    texts = np.load(tmp_path / "emb" / "text_embeddings.npy")
    hf = transformers.SiglipModel.from_pretrained(folder).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)  # SiglipProcessor's documented call
    ids = hf_tokenizer([r.split("\t")[1].strip() for r in rows], padding="max_length", return_tensors="pt",
                       max_length=hf.config.text_config.max_position_embeddings, truncation=True)["input_ids"]
    with torch.no_grad():
        want = torch.nn.functional.normalize(hf.get_text_features(input_ids=ids).pooler_output, dim=-1)
    np.testing.assert_allclose(texts, want.numpy(), atol=1e-5)
    assert cli(["gap", tmp_path / "emb" / "image_embeddings.npy", tmp_path / "emb" / "text_embeddings.npy"]) == 0


def test_gemma_style_vocabulary(tmp_path: Path) -> None:
    """SigLIP 2's layout: a byte-fallback BPE (Gemma's kind) as tokenizer.json, read by GemmaTokenizer."""
    model_file = train_spm(tmp_path, vocab_size=300, model_type="bpe", byte_fallback=True, add_dummy_prefix=False,
                           pad_id=0, eos_id=1, bos_id=2, unk_id=3)
    (tmp_path / "gemma").mkdir()
    (tmp_path / "gemma" / "tokenizer.model").write_bytes(model_file.read_bytes())
    gemma = transformers.GemmaTokenizer.from_pretrained(tmp_path / "gemma")
    gemma.padding_side = "right"
    out = siglip_folder(tmp_path, len(gemma))
    gemma.save_pretrained(out)
    (out / "tokenizer.model").unlink(missing_ok=True)  # tokenizer.json alone must do
    tokens = default_tokenizer(alignclip.load_checkpoint(out))(TEXTS)
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    for row, text in zip(tokens.tolist(), TEXTS):
        kept = [i for i in row if i not in (0, 1, 2)]  # pad, eos, bos
        assert kept == sp.encode(text)[: len(kept)] and len(kept) > 0


def test_missing_tokenizer_files_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bare = siglip_folder(tmp_path, 64)
    one_line_error(capsys, ["eval", bare, "--tasks", "retrieval"],
                   "no tokenizer files; this model's ids come from its own vocabulary: put spiece.model or "
                   "tokenizer.json or tokenizer.model")


def test_checkpoint_keeps_its_vocabulary(folder: Path, tmp_path: Path) -> None:
    """Saving (and exporting) a SigLIP copies its vocabulary, so the saved model still tokenizes as it was trained."""
    model = alignclip.load_checkpoint(folder)
    alignclip.save_checkpoint(model, tmp_path / "ours")
    again = alignclip.load_checkpoint(tmp_path / "ours")
    assert (tmp_path / "ours" / "spiece.model").is_file()
    assert torch.equal(default_tokenizer(again)(TEXTS), default_tokenizer(model)(TEXTS))


@pytest.mark.slow  # two evaluations of the synthetic benchmark
def test_eval_reports_family_and_ignores_the_bias(folder: Path, tmp_path: Path) -> None:
    """`alignclip eval` on a SigLIP folder: the report names the family; zero-shot and retrieval rank by cosine,
    so moving the logit bias (and the scale) changes no score."""
    import json
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    hf = transformers.SiglipModel.from_pretrained(folder)
    with torch.no_grad():
        hf.logit_bias.fill_(7.0)
        hf.logit_scale.fill_(0.3)
    hf.save_pretrained(moved)
    scores = []
    for source in (folder, moved):
        out = tmp_path / f"eval_{source.name}"
        assert cli(["eval", source, "--num-samples", 24, "--tasks", "zeroshot,retrieval,gap", "--out", out]) == 0
        document = json.loads((out / "metrics.json").read_text())
        assert document["family"] == "siglip" and "SigLIP family" in (out / "index.html").read_text()
        scores.append({f"{r['dataset']}/{r['task']}": r["metrics"] for r in document["results"]})
    assert scores[0] == scores[1] and any("zeroshot" in key for key in scores[0])


def test_post_training_a_siglip_folder_uses_its_vocabulary(folder: Path, tmp_path: Path) -> None:
    """Training batches are tokenized with the folder's SentencePiece ids (CLIP's BPE ids would not even fit its
    64-piece vocabulary), and the trained checkpoint keeps the vocabulary beside its weights."""
    from alignclip.training import train
    from test_post_training import config

    result = train(config(tmp_path, str(tmp_path / "cache"), "optim.steps=2", f"model.init_from={folder}"))
    saved = alignclip.load_checkpoint(result.checkpoint)
    assert (Path(result.checkpoint) / "spiece.model").is_file() and saved.family == "siglip"
    assert torch.equal(default_tokenizer(saved)(TEXTS), default_tokenizer(alignclip.load_checkpoint(folder))(TEXTS))
