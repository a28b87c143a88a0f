"""Caption sentence embeddings for AlignCLIP's separation weights: the sentence model (model.py), the memory-mapped
store of one model's embeddings (store.py, compact.py), the encoder that fills it on demand (encoder.py), and the
data-parallel precompute that `alignclip data embed-captions` and the trainer share (prefill.py)."""
from .encoder import SemanticEncoder
from .model import (DEFAULT_MODEL, CaptionEncoder, SentenceModel, _bundled_model_path, caption_key, caption_keys,
                    default_cache_dir, load_sentence_model, model_identity)
from .store import META_FILE, SEGMENT_PREFIX, CaptionStore

SHARD_PREFIX = SEGMENT_PREFIX  # the name of format 1's shards, which are the store's segments

__all__ = ["DEFAULT_MODEL", "META_FILE", "SHARD_PREFIX", "CaptionEncoder", "CaptionStore", "SemanticEncoder",
           "SentenceModel", "caption_key", "caption_keys", "default_cache_dir",
           "load_sentence_model", "model_identity"]
