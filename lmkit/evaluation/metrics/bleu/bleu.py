"""BLEU and chrF computed by sacrebleu (lmkit's offline copy), with their sacreBLEU signatures."""

import datasets
import evaluate
import numpy as np
import sacrebleu

_DESCRIPTION = ("Corpus BLEU from sacrebleu (13a tokenization by default), on the 0-100 scale, with "
                "the n-gram precisions, brevity penalty and lengths, and corpus chrF (0-100); each "
                "with its sacreBLEU signature, which makes the number comparable across papers.")
_KWARGS = """
Args:
    predictions (list of str): system outputs.
    references (list of list of str): one or more references per prediction (same count for all).
    tokenize (str): sacrebleu tokenizer ('13a', 'intl', 'char', 'none', ...). Default '13a'.
    lowercase (bool): case-insensitive BLEU. Default False.
    smooth_method (str): 'exp' (default), 'floor', 'add-k' or 'none'.
Returns:
    bleu (0-100), precisions (list of 4), brevity_penalty, sys_len, ref_len, chrf (0-100),
    signature (BLEU's, e.g. 'nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0'),
    chrf_signature
Examples:
    >>> metric = evaluate.load("lmkit/evaluation/metrics/bleu")
    >>> metric.compute(predictions=["the cat sat on the mat"], references=[["the cat sat on the mat"]])["bleu"]
    100.00000000000004
"""
_CITATION = "Post, A Call for Clarity in Reporting BLEU Scores, WMT 2018."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Bleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def _compute(self, predictions, references, tokenize="13a", lowercase=False, smooth_method="exp"):
        counts = {len(r) for r in references}
        if len(counts) > 1:
            raise ValueError(f"every prediction needs the same number of references, got {sorted(counts)}")
        streams = [list(stream) for stream in zip(*references)]
        bleu, chrf = _scorers(tokenize, lowercase, smooth_method)
        score, chrf_score = bleu.corpus_score(predictions, streams), chrf.corpus_score(predictions, streams)
        return {"bleu": score.score, "precisions": list(score.precisions), "brevity_penalty": score.bp,
                "sys_len": score.sys_len, "ref_len": score.ref_len, "chrf": chrf_score.score,
                "signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}


def _scorers(tokenize="13a", lowercase=False, smooth_method="exp"):
    """sacrebleu's BLEU and chrF with the module's options."""
    return (sacrebleu.metrics.BLEU(tokenize=tokenize, lowercase=lowercase, smooth_method=smooth_method),
            sacrebleu.metrics.CHRF(lowercase=lowercase))


def resampler(predictions, references, **options):
    """``scores(rows)``: the module's numeric scores of each resample of the examples (rows of
    example indices, ``(B, n)``), each as ``(B,)``. Every sentence's n-gram statistics are
    extracted once; a resample's corpus scores come from their sums, as `corpus_score` computes
    them from the whole corpus's sums (sacreBLEU's own paired bootstrap does the same), so each
    equals `compute` on the resampled examples. `references`: one string per prediction.

    >>> scores = resampler(["the cat sat on the mat", "a dog"], ["the cat sat on the mat", "the dog"])
    >>> scores(np.array([[0, 0], [0, 1]]))["bleu"].round(1)  # the first twice; both
    array([100. ,  92.4])
    """
    streams = [list(references)]
    bleu, chrf = _scorers(**options)
    stats = {"bleu": np.asarray(bleu._extract_corpus_statistics(predictions, streams), np.int64),
             "chrf": np.asarray(chrf._extract_corpus_statistics(predictions, streams), np.int64)}

    def scores(rows):
        n = len(predictions)
        counts = np.stack([np.bincount(row, minlength=n) for row in np.asarray(rows)])  # (B, n)
        found = {"bleu": [], "brevity_penalty": [], "sys_len": [], "ref_len": [], "chrf": []}
        for b, c in zip(counts @ stats["bleu"], counts @ stats["chrf"]):
            score = bleu._compute_score_from_stats(b.tolist())
            found["bleu"].append(score.score)
            found["brevity_penalty"].append(score.bp)
            found["sys_len"].append(score.sys_len)
            found["ref_len"].append(score.ref_len)
            found["chrf"].append(chrf._compute_score_from_stats(c.tolist()).score)
        return {k: np.asarray(v, np.float64) for k, v in found.items()}

    return scores
