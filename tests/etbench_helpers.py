"""E.T. Bench test material: a tiny sentence-transformers model saved locally (SentSim without a download) and the
parity prediction set (every task, answers taken from the official evaluation's own parsing branches).

The parity set is shared by tests/eval/test_etbench_official.py (which holds the official script's numbers) and
research/probes/etbench_official_parity.py (which runs the official script to obtain them)."""

from __future__ import annotations

import os

import numpy as np

WORDS = ("a man cuts the onion with knife then stirs pot woman opens door walks into room dog runs in park "
         "car drives down street person pours water glass").split()


def tiny_sentence_model(path: str) -> str:
    """A 2-layer, 32-wide BERT + mean pooling + normalization saved as a sentence-transformers dir at `path`.
    Weights come from numpy's RandomState(0) in sorted parameter order (not torch's initializer; LayerNorms are
    identities), so the embeddings do not change with the torch/transformers version."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    hf_dir = os.path.join(path, "hf")
    os.makedirs(hf_dir, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "(", ")", ".", ",", "-", *"abcde", *WORDS,
             *[str(i) for i in range(100)]]
    with open(os.path.join(hf_dir, "vocab.txt"), "w") as f:
        f.write("\n".join(dict.fromkeys(vocab)) + "\n")
    BertTokenizerFast(os.path.join(hf_dir, "vocab.txt"), do_lower_case=True).save_pretrained(hf_dir)
    cfg = BertConfig(vocab_size=len(dict.fromkeys(vocab)), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    bert = BertModel(cfg)
    rng = np.random.RandomState(0)
    with torch.no_grad():
        for name, p in sorted(bert.named_parameters()):
            w = rng.normal(0, 0.5, tuple(p.shape)).astype(np.float32)
            if "LayerNorm" in name:  # identity norms: random ones give every sentence the same direction
                w = np.full(p.shape, float(name.endswith("weight")), np.float32)
            p.copy_(torch.from_numpy(w))
    bert.save_pretrained(hf_dir)
    word = models.Transformer(hf_dir, max_seq_length=64)
    st = SentenceTransformer(modules=[word, models.Pooling(word.get_embedding_dimension(), "mean"),
                                      models.Normalize()], device="cpu")
    st.save(path)
    return path


def parity_samples() -> list[dict]:
    """Predictions for all 12 tasks; answers exercise the official readers' branches and the threshold ties."""
    out: list[dict] = []

    def add(task, source, a, **kw):
        out.append({"idx": len(out), "task": task, "source": source, "video": f"{task}_{len(out)}.mp4", "a": a,
                    **kw})

    # tvg / epm: range, "to", start/end sentences, ties at 0.7 ([0, 10] vs 0 - 7), unparseable, odd times
    for a in ("0 - 7", "The event starts at 12.5 seconds.\nIt ends at 20 seconds.", "from 3 to 9", "no idea",
              "It starts at 2 seconds!", "2.5 - 6.0 seconds, 40 - 50 seconds", "it happens 1 and ends 9.5",
              "10 - 0"):
        add("tvg", "qvhighlights", a, tgt=[0, 10])
    for a in ("0 - 7", "5 - 10", "0 - 3", "starts at 1\nends at 4", "nothing"):
        add("epm", "ego4d_nlq", a, tgt=[1.0, 6.0])
    # tal: several targets; float32 threshold ties ([0, 10] vs 0 - 7 counts at 0.7 here)
    for a, tgt in (("0 - 7", [[0, 10]]), ("0 - 10, 50 - 60", [[0, 10], [20, 30]]), ("20 - 27 and 0 - 3",
                   [[0, 10], [20, 30]]), ("nope", [[1, 2]]), ("0 - 3, 1 - 2, 2 - 3", [[0, 3], [5, 6], [7, 9]])):
        add("tal", "activitynet", a, tgt=tgt)
    # evs: seconds masks with half-even rounding
    for a, tgt in (("2.5 - 6.5", [[2, 6]]), ("0 - 10, 20 - 30", [[5, 25]]), ("none", [[0, 1]]),
                   ("100 - 120", [[0, 10]])):
        add("evs", "summe", a, tgt=tgt)
    # vhd: first number inside a target of any annotator
    for a, tgt in (("The highlight is at 12.5 seconds.", [[10, 15], [20, 25]]), ("3", [[[0, 2]], [[2.5, 4]]]),
                   ("none", [[0, 1]]), ("-1", [[0, 5]])):
        add("vhd", "youtube_highlights", a, tgt=tgt)
    # tem: best of several targets
    for a, tgt in (("4 - 9", [[0, 5], [5, 10]]), ("starts 20\nends 30", [[18, 31]]), ("-", [[0, 1]])):
        add("tem", "perception_test", a, tgt=tgt)
    # dvc / slc: the paragraph reader, "Start time/End time/Description", the fallbacks, short captions
    dvc = (("0.0 - 10.0 seconds, a man cuts the onion.\n20.0 - 24.0 seconds, he stirs the pot.",
            [[0, 10], [20, 30]], ["a man cuts the onion", "the man stirs the pot"]),
           ("Start time: 5s, End time: 10s. Description: a woman opens the door.", [[4, 10]],
            ["a woman opens the door"]),
           ("at 30 seconds, a dog runs in the park", [[15, 45], [60, 70]], ["a dog runs in the park", "a car"]),
           ("12 - 15 seconds, ok\n1:10 seconds, a car drives down the street", [[50, 90]], ["a car drives"]),
           ("nothing to report", [[0, 5]], ["a person pours water"]),
           ("0 - 40 seconds, a person pours water into a glass.", [[0, 40], [40, 60]],
            ["a person pours water into a glass", "the person drinks"]))
    for i, (a, tgt, g) in enumerate(dvc):
        add("dvc" if i < 4 else "slc", "youcook2" if i < 4 else "cross_task", a, tgt=tgt, g=g)
    # rar / eca / rvq: "(X)", leading letters, "Best option:", the similarity fallback
    opts = ["a man cuts the onion", "a woman opens the door", "a dog runs in the park", "a car drives down"]
    for task, src in (("rar", "blink"), ("eca", "charades_sta"), ("rvq", "star")):
        for a, p in (("(B)", 1), ("Best option: (C) a dog", 2), ("a", 1), ("b. the woman", 1),
                     ("the woman opens the door", 1), ("the dog runs", 0), ("", 3), ("(x) c", 2)):
            add(task, src, a, o=opts, p=p)
    # gvq: choice then grounding of correctly answered samples
    for a, p in (("(A) 0 - 7 seconds", 0), ("B, from 3 to 9", 1), ("a man cuts the onion 2 - 8", 0),
                 ("C", 1), ("", 0)):
        add("gvq", "qa_ego4d", a, o=opts, p=p, tgt=[0, 10])
    return out
