"""General vocabulary of language-model training, as data: how people name the parts, knobs and techniques.

This is domain knowledge (the synonyms and acronyms of the field), not knowledge of one train.py: which
constant a phrase means is learned from train.py's own names, comments and code (`memory.vocabulary`).
Phrases are written naturally; they go through the same normalisation as ideas (case, hyphens, British
spelling, stemming), so "normalise", "normalization" and "Normalisations" are one phrase.

A phrase may stand for several concepts at once ("microbatch" is a batch on one device).
"""

from __future__ import annotations

# ----------------------------------------------------------------------------------- words inside knob names
# concept -> phrases. Constant names are read with these too (MATRIX_LR -> matrix + lr).
QUANTITIES: dict[str, tuple[str, ...]] = {
    "lr": ("learning rate", "lr", "lrs", "step size", "peak lr", "peak learning rate", "base lr", "max lr", "learning rates", "step sizes"),
    "momentum": ("momentum", "momenta", "momentum coefficient", "momentum factor", "momentum term"),
    "beta": ("betas", "beta", "adam betas"),
    "eps": ("eps", "epsilon", "adam epsilon", "denominator epsilon", "numerical epsilon"),
    "beta1": (), "beta2": (),  # named through MULTI_PARTS, with "beta"
    "weight_decay": ("weight decay", "wd", "l2 regularization", "l2 penalty", "l2 decay", "decoupled decay",
                     "decoupled weight decay", "l2", "l2 style decay", "l2 style weight decay", "decay on the weights", "weight decay coefficient", "decay coefficient", "shrinkage of the weights"),
    "depth": ("depth", "layers", "layer count", "number of layers", "num layers", "n layer", "n layers",
              "blocks", "transformer blocks", "transformer layers", "number of blocks", "block count",
              "n blocks", "stack", "deeper", "shallower", "deepen", "deep", "shallow", "transformer depth", "num blocks", "network depth", "layers deep", "blocks deep"),
    "width": ("width", "model width", "model dim", "model dimension", "d model", "hidden size",
              "hidden dim", "hidden dimension", "embedding dim", "embedding dimension", "channels",
              "n embd", "residual width", "model size", "wider", "narrower", "widen", "wide", "narrow", "embedding size", "residual stream width", "hidden state size", "d embd", "n embed", "model dims"),
    "aspect": ("aspect", "aspect ratio"),
    "head_dim": ("hd", "d head", "head dim", "head dimension", "head size", "per head dimension", "dimension per head",
                 "head width", "dim per head", "d head", "headdim", "dimensional head", "dimensional attention head",
                 "wide head", "size of each head", "dim head", "dim heads", "dim attention head", "dimensional heads",
                 "dimensional attention heads", "wide heads", "heads of dimension", "head of dimension", "dimension of each head",
                 "heads of size", "per head size", "head dims", "dims per head", "dimensions per head", "per head dim", "attention head dimension", "head dimensionality"),
    "heads": ("heads", "head", "attention heads", "n head", "number of heads", "head count", "num heads", "n heads", "query heads", "attention head count", "number of attention heads"),
    "ratio": ("ratio", "factor", "multiplier", "expansion", "expansion ratio", "expansion factor", "mult"),
    "base": ("base", "theta", "frequency base", "base frequency"),
    "steps": ("steps", "iterations", "iters", "iteration", "step"),
    "batch": ("batch", "batch size", "batches", "bs", "batchsize"),
    "token": ("tokens", "token"),
    "sequence": ("sequence", "sequences", "seqs", "rows"),
    "total": ("total", "global", "effective", "overall"),
    "device": ("device", "per device", "per gpu", "local", "forward pass", "forward backward pass", "forward backward",
               "per forward backward", "per forward", "per pass", "each pass", "each forward backward"),
    "eval": ("eval", "evaluation", "validation", "val"),
    "excluded": ("excluded", "exclude", "excluding", "not counted", "untimed", "not timed", "skip from timing",
                 "from the timed budget", "from timing", "do not count", "not count", "uncounted", "not counting", "not timed", "do not time", "ignored for timing"),
    "warmup": ("warmup", "warm up", "ramp up", "ramp", "linear warmup", "lr warmup", "learning rate warmup",
               "warm the lr up", "warm the learning rate up", "ramp the lr up", "ramp up the lr", "warm lr up",
               "ramp the learning rate up", "ramp up the learning rate"),
    "warmdown": ("wd ratio", "warmdown ratio", "warmdown", "warm down", "cooldown", "cool down", "decay phase", "lr decay", "anneal",
                 "annealing", "decay", "decaying", "learning rate decay", "lr cooldown", "lr anneal",
                 "cooldown phase", "annealing phase", "stay at its peak", "stay at peak", "stays at its peak",
                 "at its peak until", "at peak until", "hold the lr", "hold the learning rate", "keep the lr flat",
                 "keep the lr constant", "lr flat", "constant lr until", "full lr until", "peak lr until", "decay window", "annealing window", "ramp down", "taper", "tapering", "wind down", "decay period", "cooldown period", "cooldown fraction"),
    "final": ("lr floor", "learning rate floor", "floor", "end value"),
    "frac": ("frac", "fraction", "fractional"),
    "softcap": ("softcap", "soft cap", "soft capping", "softcapping", "logit cap", "logit capping", "capping",
                "cap", "tanh cap", "tanh capping", "tanh soft cap", "tanh softcap", "logit softcap", "squash", "squashing", "tanh squash", "tanh squashing", "tanh bound", "saturation", "tanh cap"),
    "logit": ("logit", "logits", "output logits"),
    "ns": ("ns", "newton schulz", "newton schultz", "orthogonalization", "polar", "quintic iteration",
           "orthogonalization iterations", "newton schulz iterations", "newton schulz steps", "ns iterations", "orthogonalization steps", "polar iterations", "quintic iterations", "orthogonalization passes", "quintic", "ns steps", "orthogonalization iteration"),
    "rope": ("rope", "rotary", "rotary embedding", "rotary embeddings", "rotary position embedding",
             "rotary position embeddings", "rotary positional embedding", "rotary positional encoding",
             "rotary encoding", "rotary tables", "rotary frequency", "rope frequency", "rope theta", "rotary theta", "rotary base frequency"),
    "position": ("position encoding", "positional encoding", "position embedding", "positional embedding",
                 "positions", "position information"),
    "seq_len": ("sequence length", "seq len", "context length", "context window", "context size", "block size"),
    "init": ("init", "initialization", "initialize", "initialized", "initializing", "init std", "std",
             "standard deviation", "initial scale", "start"),
    "muon": ("muon", "muon optimizer", "orthogonalized optimizer", "orthogonalizing optimizer", "orthogonal optimizer", "newton schulz optimizer", "orthogonalized momentum optimizer"),
    "adamw": ("adamw", "adam", "adam w"),
    "optimizer": ("optimizer", "optimizers", "optim"),
    "parameters": ("parameters", "params", "param", "weights", "weight"),
    "size": ("size", "num", "number", "count", "value", "amount"),
}

# -------------------------------------------------------------------------------------- parts of the model
# Where a change applies. A phrase may stand for several parts ("residual branches").
PARTS: dict[str, tuple[str, ...]] = {
    "embedding": ("embedding", "embeddings", "embedding table", "token embedding", "token embeddings",
                  "input embedding", "input embeddings", "wte", "embed", "emb", "embedding matrix", "embedding layer",
                  "token embedding matrix", "input embedding matrix", "embedding tables",
                  "embedding weights", "token embedding table", "input embedding table", "token table", "vocab embedding", "lookup table", "embedding lookup", "token embedding layer"),
    "unembedding": ("unembedding", "unembed", "lm head", "output head", "output layer", "readout", "classifier",
                    "classifier head", "output embedding", "output embeddings", "de embedding", "final projection",
                    "vocab projection", "language model head", "lm head layer", "head layer", "output matrix", "logit layer", "final linear", "prediction head", "unembedding matrix", "decoder head", "output classifier", "softmax layer", "output projection to the vocabulary"),
    "attention": ("attention sub layer", "attention sublayer", "attention", "attn", "self attention", "attention layer", "attention layers", "attention block",
                  "attention blocks", "causal self attention", "sdpa", "attention scores", "attention weights", "attention probabilities", "attention logits", "attention matrix", "softmax attention", "attention sublayer", "attention module", "attention branch", "causalselfattention", "attention score", "attention logit"),
    "mlp": ("feed forward hidden size", "ffn hidden size", "ffn size", "mlp hidden dim", "ffn hidden dim",
            "feed forward hidden dim", "intermediate dim", "mlp hidden dimension", "mlp sub layer", "mlp sublayer", "feed forward sub layer", "mlp", "mlps", "feed forward", "feedforward", "ffn", "ff", "fc", "feed forward block",
            "feed forward layer", "feed forward network", "feed forward blocks", "mlp block", "mlp layers",
            "mlp hidden layer", "hidden layer of the mlp", "hidden layer", "hidden layers", "feed forward hidden layer",
            "ffn hidden layer", "intermediate size", "intermediate layer", "mlp hidden size", "ffn dim",
            "feed forward dimension", "mlp width", "ffn width", "feed forward width", "feed forward size",
            "hidden width of the mlp", "mlp hidden width", "up projection", "down projection", "mlp up projection", "mlp down projection", "expansion layer", "mlp branch", "feed forward branch", "ffn branch", "mlp sublayer", "mlp module", "position wise feed forward"),
    "matrix": ("matrix", "matrices", "2d weights", "2d matrices", "hidden weights", "hidden matrices",
               "weight matrices", "block weights", "2d block weights", "2d parameters", "matrix parameters",
               "2d params", "2d weight matrices", "hidden matrix", "hidden layer weights", "matrix weights",
               "hidden layer matrices", "hidden layer weight matrices", "block matrices", "linear weights", "weight matrix", "2d tensors"),
    "scalar": ("scalar", "scalars", "lambdas", "scalar parameters", "scalar params", "mixing scalars",
               "learned scalars", "per block scalars"),
    "query": ("query", "queries"),
    "key": ("key", "keys"),
    "value": ("value projection", "value vectors", "value vector", "value heads", "v projection", "c v", "v proj",
              "values of the attention", "attention values", "value path", "the v"),
    "proj": ("projection", "projections"),
    "out_proj": ("output projection", "output projections", "c proj", "out proj", "o proj"),
    "value_embedding": ("value embedding", "value embeddings", "value embed", "ve", "value embedding table",
                        "value embedding tables"),
    "norm": ("norm", "norms", "normalization", "normalizations", "normalize", "normalizing", "normalized",
             "normalization layer"),
    "loss": ("loss", "training loss", "cross entropy", "objective", "train loss"),
    "eval_loss": ("evaluation loss", "validation loss", "eval loss", "val loss"),
    "everything": ("everything", "all parameters", "every parameter", "everywhere", "all layers", "whole model",
                   "entire model", "all linear layers", "every linear layer", "all weights", "every layer",
                   "all the parameters", "every nn linear", "all blocks", "every block", "all linears", "every linear", "all nn linear", "whole network", "every module", "all linear"),
}
MULTI_PARTS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("attention", "mlp"): ("residual branches", "residual branch", "block outputs", "branch outputs",
                           "attention and mlp outputs", "sublayer outputs", "residual stream", "residual",
                           "residual path", "residual projections", "residual projection", "sub layers", "sublayers",
                           "sub layer outputs", "sublayer output", "both sublayers", "both branches",
                           "attention and feed forward outputs", "branches"),
    ("attention", "out_proj"): ("attention output projection", "attention output projections", "attention c proj"),
    ("query", "key"): ("qk", "q and k", "q k", "queries and keys", "query and key"),
    ("query", "key", "value"): ("qkv", "q k v", "q k and v", "queries keys and values", "q, k, v", "q, k and v",
                                "q, k, and v", "queries, keys and values", "query, key and value"),
    ("key", "value"): ("kv", "k v", "key value", "keys and values", "k and v"),
    ("device", "batch"): ("microbatch", "micro batch", "micro batches", "microbatches", "per device batch",
                          "per gpu batch", "device batch", "local batch"),
    ("switch:x0skip", "scalar"): ("x0 lambdas", "x0 lambda", "resid x0 lambdas"),
    ("switch:resid_lambdas", "scalar"): ("resid lambdas", "residual lambdas", "resid lambda"),
    ("beta", "beta1"): ("beta1", "beta 1", "b1", "first moment", "first moment decay", "first beta", "first adam beta",
                        "adam beta1", "first adamw beta", "adam's first beta"),
    ("beta", "beta2"): ("beta2", "beta 2", "b2", "second moment", "second moment decay", "second beta",
                        "second adam beta", "adam beta2", "second adamw beta", "adam's second beta"),
    ("final", "lr"): ("final lr", "final learning rate", "end lr", "end learning rate", "minimum lr",
                      "minimum learning rate", "min lr", "final lr fraction", "lr at the end", "terminal lr",
                      "final fraction of the peak lr", "of the peak lr", "of peak lr", "of the peak learning rate",
                      "of its peak", "of the peak", "of peak", "of the maximum lr", "of the max lr",
                      "end of schedule lr", "end of schedule learning rate", "end of training lr",
                      "lr at the end of the schedule", "x peak", "times the peak", "x the peak lr"),
    ("unembedding", "lr"): ("head lr", "head learning rate", "lr head", "output lr"),
    ("embedding", "unembedding"): ("embedding and head", "embeddings and head", "embedding and lm head",
                                   "embeddings head", "embedding head",
                                   "input and output embeddings", "embedding and output head"),
    ("total", "batch"): ("global batch", "total batch", "effective batch", "tokens per step", "tokens step",
                         "tokens per optimizer step", "tokens per update"),
}

# ---------------------------------------------------------------------------------------------- directions
UP_WORDS = (
    "increase", "increased", "increasing", "raise", "raised", "raising", "bump", "grow", "larger", "bigger", "higher",
    "more", "longer", "wider", "deeper", "up", "boost", "lengthen", "extend", "loosen", "looser", "stretch",
    "widen", "deepen", "enlarge", "expand", "heavier", "stronger", "greater", "scale up", "bolder",
)
DOWN_WORDS = (
    "decrease", "decreased", "decreasing", "lower", "lowered", "lowering", "reduce", "reduced", "reducing", "cut",
    "shrink", "smaller", "shorter", "less", "fewer", "narrower", "shallower", "down", "tighten", "tighter",
    "shorten", "trim", "weaker", "lighter", "gentler", "milder", "calmer", "scale down", "slash", "narrow",
)
# adjectives that name a knob and its direction at once
IMPLIED: dict[str, tuple[str, int]] = {
    "deeper": ("depth", 1), "shallower": ("depth", -1), "wider": ("width", 1), "narrower": ("width", -1),
    "widen": ("width", 1), "deepen": ("depth", 1),
}
ON_WORDS = ("add", "adds", "adding", "enable", "enables", "enabling", "introduce", "introducing", "turn on",
            "apply", "applying", "insert", "include", "put", "give", "regularize", "regularizing", "switch on", "turn it on")
OFF_WORDS = ("remove", "removing", "removes", "disable", "disabling", "drop", "dropping", "delete", "turn off",
             "no", "without", "get rid of", "strip", "stop", "ablate", "eliminate", "untie", "untied", "untying",
             "switch off", "kill", "skip", "not", "none", "off", "rid of")
REPLACE_WORDS = ("replace", "replacing", "swap", "swapping", "switch", "switching", "instead of", "rather than",
                 "in place of", "change", "substitute", "go back to", "move to", "migrate")
FROM_WORDS = ("from", "was", "currently", "current", "instead of", "rather than", "in place of", "replacing")
MULTIPLIERS: dict[str, float] = {
    "halve": 0.5, "halving": 0.5, "halved": 0.5, "double": 2.0, "doubling": 2.0, "doubled": 2.0, "twice": 2.0,
    "triple": 3.0, "tripling": 3.0, "tripled": 3.0, "thrice": 3.0, "quadruple": 4.0, "quadrupled": 4.0,
    "quadrupling": 4.0, "quarter": 0.25, "quartered": 0.25, "quartering": 0.25,
}
# a fraction word after "a"/"one"/a number word: "a third more", "two thirds"
FRACTIONS: dict[str, int] = {"half": 2, "halves": 2, "third": 3, "thirds": 3, "quarter": 4, "quarters": 4,
                             "fifth": 5, "fifths": 5, "tenth": 10, "tenths": 10}
SCALE_SUFFIXES: dict[str, float] = {"k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6, "mil": 1e6, "b": 1e9,
                                    "billion": 1e9}

# words that say nothing about what changes (filtered from topic words)
FILLERS = frozenset(
    "a an the of for to in on at by with and or from into onto as is are be been being it its this that these those "
    "we i you our my let us try trying tried use using used make making set setting instead rather than per each "
    "every all some any so then also just only still now currently current new old value values run runs training "
    "train model models experiment experiments idea ideas should could would may might will can see test check "
    "whether if maybe again once more time times same while keep keeping kept here there what which why how than "
    "do does done get go going put version variant attempt second first proposal think probably".split()
)
# phrases that only locate ("per layer") and must not be read as the knob they contain
FILLER_PHRASES = ("square root", "bias corrected", "bias correction", "posit that", "we posit", "i posit", "per layer", "per block", "per head", "each layer", "each block", "layer wise", "per step",
                  "every other block", "every other layer", "first layer", "last layer", "per token", "non zero",
                  "alternate layers", "alternating layers", "every second layer", "odd layers", "even layers",
                  "alternate blocks", "all the way", "input projection", "input projections", "linear layer",
                  "linear layers", "linear projection", "linear projections", "across layers", "across all layers",
                  "across the layers", "across blocks", "across all blocks", "in the blocks", "in the layers",
                  "inside the blocks",
                  "in the transformer blocks", "of the blocks")
# single words too vague to name a knob when a technique is named beside them ("EMA with decay 0.999")
WEAK_WORDS = ("decay", "cap", "base", "steps", "step", "window", "start", "ramp", "stack", "theta", "val", "init",
              "std", "end", "scale", "size", "factor", "ratio", "expansion", "multiplier", "mult", "beta",
              "coefficient", "coef")
# the parts a quantity lives in: named beside it, they say which quantity, not where ("attention head dim")
HOMES: dict[str, tuple[str, ...]] = {
    "head_dim": ("attention", "query", "key", "value"), "heads": ("attention", "query", "key", "value"),
    "rope": ("attention", "query", "key"), "base": ("attention",), "position": ("attention", "embedding"),
    "ns": ("matrix", "muon"), "momentum": ("muon", "matrix"), "width": ("embedding", "attention", "mlp"),
    "depth": ("attention", "mlp"), "ratio": ("mlp",), "logit": ("unembedding",), "softcap": ("unembedding",),
    "scalar": ("attention", "mlp", "embedding"),
}
# parts that are the same place as a knob's own ("the LM head logits" are where the logit softcap acts)
SAME_PLACE = {"logit": {"unembedding"}}
# generic words in constant names that need not be mentioned ("MLP ratio" may be called "the MLP")
GENERIC = frozenset({"size", "ratio", "frac", "total", "parameters", "optimizer", "base", "steps", "token"})
# qualifiers that must be named for a constant carrying them to be meant ("batch" alone is the total batch)
RESTRICTIVE = frozenset({"device", "eval", "excluded", "final", "scalar", "embedding", "unembedding", "matrix",
                         "head_dim", "beta1", "beta2"})
