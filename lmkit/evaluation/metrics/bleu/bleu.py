"""BLEU computed by sacrebleu (lmkit's offline copy)."""

import datasets
import evaluate
import sacrebleu

_DESCRIPTION = ("Corpus BLEU from sacrebleu (13a tokenization by default), on the 0-100 scale, with "
                "the n-gram precisions, brevity penalty and lengths.")
_KWARGS = """
Args:
    predictions (list of str): system outputs.
    references (list of list of str): one or more references per prediction (same count for all).
    tokenize (str): sacrebleu tokenizer ('13a', 'intl', 'char', 'none', ...). Default '13a'.
    lowercase (bool): case-insensitive BLEU. Default False.
    smooth_method (str): 'exp' (default), 'floor', 'add-k' or 'none'.
Returns:
    bleu (0-100), precisions (list of 4), brevity_penalty, sys_len, ref_len
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
        score = sacrebleu.corpus_bleu(predictions, streams, tokenize=tokenize, lowercase=lowercase,
                                      smooth_method=smooth_method)
        return {"bleu": score.score, "precisions": list(score.precisions), "brevity_penalty": score.bp,
                "sys_len": score.sys_len, "ref_len": score.ref_len}
