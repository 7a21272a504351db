"""The field's techniques, as data: families of alternatives, techniques turned on or off, how people describe
them without naming them, and where each one acts.

Like `memory.lexicon`, this is general knowledge of language-model training, not of one train.py. Phrases go
through the same normalisation as ideas (case, hyphens, British spelling, stems). `CUES` describe a technique by
the words that, together in one stretch of an idea, mean it ("soften the one-hot targets" is label smoothing):
each cue is a list of groups separated by " + ", each group a list of alternatives separated by "|"; an
alternative is a phrase or `@concept` (any phrase that names the concept); a group starting with "!" vetoes.
"""

from __future__ import annotations

# ------------------------------------------------------------------------- alternatives within one family
# family -> member -> phrases. Two ideas that pick different members are different experiments.
FAMILIES: dict[str, dict[str, tuple[str, ...]]] = {
    "activation": {
        "relu": ("relu", "plain relu", "rectified linear", "rectified linear unit"),
        "relu2": ("relu squared", "squared relu", "relu 2", "relu^2", "relu²", "relu x 2", "relu sq", "square relu",
                  "relu square", "relusquared", "squared rectified linear", "relu**2", "square of relu",
                  "squared rectified linear unit", "relu then square", "square", "squaring", "squared"),
        "gelu": ("gelu", "gaussian error linear unit", "gelu tanh", "tanh approximate gelu", "approximate gelu",
                 "gaussian error linear"),
        "silu": ("silu", "swish", "x sigmoid x", "sigmoid linear unit", "x times sigmoid x", "sigmoid weighted linear"),
        "swiglu": ("swiglu", "swi glu", "silu gated linear unit", "swish gated linear unit", "swish glu", "silu glu",
                   "silu gated", "swish gated", "gated silu", "gated swish", "silu gate", "swish gate"),
        "geglu": ("geglu", "gelu gated linear unit", "gelu glu", "gated gelu", "gelu gated", "gelu gate"),
        "reglu": ("reglu", "relu gated linear unit", "relu glu", "gated relu", "relu gated"),
        "glu": ("glu", "gated linear unit", "gated unit", "gated units", "gated mlp", "gated feed forward",
                "gated ffn", "gated linear units"),
        "leaky_relu": ("leaky relu", "leakyrelu"),
        "softplus": ("softplus",), "mish": ("mish",), "elu": ("elu",), "selu": ("selu",),
        "tanh": ("tanh activation",),
    },
    "norm_type": {
        "rmsnorm": ("rmsnorm", "rms norm", "rms normalization", "root mean square norm",
                    "root mean square normalization", "rms", "rms layer norm"),
        "layernorm": ("layernorm", "layer norm", "layer normalization", "ln", "layernorms", "mean centered",
                      "mean centering", "mean centered normalization", "mean centered layer normalization"),
        "batchnorm": ("batchnorm", "batch norm", "batch normalization"),
        "dyt": ("dyt", "dynamic tanh", "derf", "normalization free"),
        "scalenorm": ("scalenorm", "scale norm", "l2 normalization"),
        "no_norm": ("no normalization", "no norm", "identity norm", "without normalization", "no norms"),
    },
    "position": {
        "rope": ("rope", "rotary", "rotary embedding", "rotary embeddings", "rotary position embedding",
                 "rotary position embeddings", "rotary positional embedding", "rotary positional encoding"),
        "partial_rope": ("partial rotary", "partial rope", "partial rotary embedding", "rotary on half",
                         "rope on half", "rotary on a fraction", "rope on part of the head"),
        "alibi": ("alibi", "attention with linear biases", "linear biases", "linear bias", "linear attention biases",
                  "positional biases", "position biases", "positional bias", "alibi biases",
                  "linear attention bias", "attention biases proportional to distance", "distance penalty",
                  "distance penalties", "distance bias", "distance proportional penalty",
                  "distance proportional penalties"),
        "learned_pos": ("learned absolute position", "learned absolute positions", "learned position embedding",
                        "learned position embeddings", "learned positional embedding", "learned positional embeddings",
                        "absolute position embedding", "absolute position embeddings", "position embedding table",
                        "learned positions", "wpe", "learned absolute position embedding", "trainable position",
                        "trainable positions", "trainable position embedding", "learned position table",
                        "position table", "trainable wpe", "learnable position embedding"),
        "sinusoidal": ("sinusoidal", "sinusoidal position", "sinusoidal positional encoding", "sine cosine positions"),
        "xpos": ("xpos",),
        "nope": ("nope", "no positional encoding", "no position encoding", "no positional embedding",
                 "no position embedding", "no positions", "without positional encoding", "position free"),
    },
    "optimizer": {
        "muon": ("muon", "orthogonalized optimizer", "orthogonalizing optimizer", "orthogonal optimizer",
                 "newton schulz optimizer", "orthogonalized momentum optimizer"),
        "adamw": ("adamw", "adam", "adam w"),
        "sgd": ("sgd", "stochastic gradient descent", "plain sgd"),
        "lion": ("lion", "evolved sign momentum", "sign momentum", "sign momentum optimizer"),
        "signsgd": ("signsgd", "sign sgd", "signum"),
        "sophia": ("sophia",), "adafactor": ("adafactor", "factored second moment", "factored second moments"),
        "shampoo": ("shampoo",), "soap": ("soap",), "adagrad": ("adagrad",), "rmsprop": ("rmsprop",),
        "lamb": ("lamb",), "lars": ("lars",), "nadam": ("nadam",), "radam": ("radam",), "adan": ("adan",),
        "ademamix": ("ademamix",), "adopt": ("adopt optimizer",), "mars": ("mars optimizer",), "psgd": ("psgd",),
        "schedule_free": ("schedule free", "schedulefree"),
    },
    "schedule": {
        "linear": ("linear decay", "linear schedule", "linear cooldown", "linear warmdown", "decay linearly",
                   "linearly decay", "linear anneal", "linear decay schedule", "linear ramp down"),
        "cosine": ("cosine", "cosine decay", "cosine schedule", "cosine annealing", "cosine anneal", "half cosine",
                   "cosine shaped", "cosine cooldown"),
        "cosine_restarts": ("cosine with restarts", "warm restarts", "sgdr"),
        "wsd": ("wsd", "warmup stable decay", "trapezoidal", "trapezoid", "stable decay"),
        "constant": ("constant lr", "constant learning rate", "constant schedule", "flat lr", "flat learning rate"),
        "inv_sqrt": ("inverse square root", "inverse sqrt", "rsqrt", "inverse square root decay",
                     "reciprocal square root"),
        "sqrt_cooldown": ("1 sqrt cooldown", "square root cooldown", "sqrt cooldown"),
        "polynomial": ("polynomial decay", "polynomial schedule"),
        "exponential": ("exponential decay", "exponential schedule"),
        "step_decay": ("step decay", "step schedule"),
        "one_cycle": ("one cycle", "1cycle", "onecycle"),
    },
    "attention_kind": {
        "mha": ("mha", "multi head attention", "full multi head"),
        "full": ("full attention", "full causal attention", "global attention", "dense attention",
                 "full context attention"),
        "mqa": ("mqa", "multi query attention", "multi query", "single key value head", "1 kv head",
                "single kv head", "one kv head", "1 key value head", "single key head"),
        "gqa": ("gqa", "grouped query attention", "grouped query", "kv groups", "key value groups",
                "grouped attention", "kv heads", "key value heads", "k v heads"),
        "sliding_window": ("sliding window", "sliding window attention", "local attention", "windowed attention",
                           "window attention", "swa", "attention window", "window", "local window", "banded mask",
                           "band mask", "banded causal mask", "banded attention", "local band", "attention span",
                           "local causal attention"),
        "linear_attention": ("linear attention",),
        "differential": ("differential attention", "diff attention", "diff transformer"),
        "mla": ("mla", "multi head latent attention", "latent attention"),
    },
    "init": {
        "zero": ("zero init", "zero initialization", "zero initialize", "zeros", "zero", "zeroed", "zero initialized",
                 "initialized to zero", "init to zero"),
        "normal": ("normal init", "gaussian init", "normal distribution", "randomly", "random init", "random"),
        "trunc_normal": ("truncated normal", "trunc normal"),
        "uniform": ("uniform init", "uniform"),
        "orthogonal": ("orthogonal init", "orthogonal matrices", "orthogonal initialization", "orthogonal matrix",
                       "orthogonally initialized", "orthogonal weights", "orthogonal initializer"),
        "xavier": ("xavier", "glorot"),
        "kaiming": ("kaiming", "he init", "he initialization"),
        "lecun": ("lecun", "lecun init"),
        "scaled": ("scaled init", "scaled initialization", "gpt 2 scaled", "gpt2 scaled", "gpt 2 style init",
                   "depth scaled", "1/sqrt(2*depth)", "1/sqrt(2 * n_layer)", "1/sqrt(2L)", "1/sqrt(2 * depth)",
                   "1/sqrt(2*n_layers)", "sqrt(2 * number of layers)", "1/sqrt(depth)", "scaled by depth"),
    },
    "block_layout": {
        "parallel": ("parallel", "parallel block", "parallel blocks", "in parallel", "gpt j style",
                     "parallel attention", "parallel residual", "parallel layers", "palm style block"),
        "sequential": ("sequential", "serial"),
    },
    "norm_position": {
        "prenorm": ("pre norm", "prenorm", "pre ln", "pre layer norm", "norm before"),
        "postnorm": ("post norm", "postnorm", "post ln", "post layer norm", "norm after"),
        "sandwich": ("sandwich norm", "sandwich", "peri ln", "peri norm"),
        "deepnorm": ("deepnorm", "deep norm"),
    },
    "momentum_kind": {
        "nesterov": ("nesterov", "nesterov momentum", "look ahead", "lookahead", "look ahead momentum", "nag",
                     "nesterov accelerated"),
        "heavy_ball": ("heavy ball", "heavy ball momentum", "polyak momentum", "classical momentum", "plain momentum",
                       "standard momentum", "vanilla momentum", "non nesterov"),
    },
    "precision": {
        "bf16": ("bf16", "bfloat16", "brain float"),
        "fp16": ("fp16", "float16", "half precision"),
        "fp8": ("fp8", "float8", "8 bit float", "8 bit floating point", "scaled mm"),
        "fp32": ("fp32", "float32", "full precision", "single precision"),
        "tf32": ("tf32", "tensorfloat"),
    },
}

# ------------------------------------------------------------------------------ techniques turned on or off
SWITCHES: dict[str, tuple[str, ...]] = {
    "dropout": ("dropout", "drop out", "dropout rate", "dropout probability"),
    "stochastic_depth": ("stochastic depth", "drop path", "droppath", "layer drop", "layerdrop", "layer dropout",
                         "block dropout", "drop block"),
    "bias": ("bias", "biases", "bias term", "bias terms", "bias true", "bias parameters", "biased"),
    "tying": ("tie", "tied", "ties", "tying", "weight tying", "share", "shared", "sharing", "shares", "tie weights",
              "weight sharing", "same matrix", "one matrix", "reuse", "reuses", "re use", "reusing"),
    "zloss": ("z loss", "zloss", "log z", "logsumexp", "log sum exp", "log partition", "partition function",
              "log z 2", "softmax normalizer", "normalizer penalty", "log(z)^2", "log(z)", "log z squared",
              "log(z)²"),
    "label_smoothing": ("label smoothing", "smoothed targets", "smooth targets", "target smoothing",
                        "smoothing the targets", "smoothed labels", "soft targets", "smooth labels",
                        "soft labels", "softened targets", "soften the targets"),
    "grad_clip": ("gradient clipping", "grad clipping", "clip", "clipping", "clip grad", "clip norm", "clip the",
                  "grad norm clipping", "gradient norm clipping", "clip grad norm", "max norm", "clipped",
                  "gradient norm cap", "max grad norm"),
    "ema": ("ema", "exponential moving average", "weight averaging", "moving average", "polyak",
            "averaged weights", "parameter averaging", "weight average", "averaged parameters", "shadow weights",
            "shadow copy", "shadow parameters", "shadow model", "iterate averaging", "model averaging"),
    "qknorm": ("qk norm", "qk normalization", "qk layernorm", "qk rmsnorm", "query key norm",
               "query key normalization", "qk layer norm"),
    "value_residual": ("value residual", "value residual learning", "resformer", "value skip", "v residual",
                       "residual value", "value residual connection"),
    "x0skip": ("x0", "x0 mixing", "x0 skip", "initial embedding", "first layer input",
               "initial embeddings", "x0 lambda", "embedding skip", "skip to the embedding"),
    "resid_lambdas": ("residual scaling", "residual scalars", "residual gains",
                      "residual scale", "residual scales", "resid scalars", "resid scalar", "residual multipliers",
                      "learned residual scaling"),
    "norm_gains": ("gains", "learnable gains", "norm weights", "elementwise affine", "affine", "norm gains",
                   "trainable gains", "per channel weight", "norm scale", "gain", "learnable scale"),
    "temperature": ("temperature", "learnable temperature", "learned temperature", "logit scale",
                    "attention temperature", "softmax temperature", "attention scale", "learned attention scale",
                    "learnable attention scale", "qk scale"),
    "gate": ("gate", "gated", "gating", "sigmoid gate", "output gate"),
    "compile": ("torch compile", "compile", "compilation", "compiled", "compiling"),
    "grad_accum": ("gradient accumulation", "grad accumulation", "accumulation", "accumulate gradients"),
    "value_embeddings": ("value embedding", "value embeddings", "value embed", "ve", "value embedding table",
                         "value embedding tables", "value embeds"),
    "moe": ("mixture of experts", "moe", "experts", "expert", "sparse mlp", "sparse feed forward",
            "switch transformer", "router", "routing", "routed", "expert mlps", "token choice", "expert choice",
            "sparsely gated"),
    "token_shift": ("token shift", "smear", "smear gate", "smeargate", "shift tokens", "token shifting"),
    "unet": ("u net", "unet", "u net skips", "u net skip connections", "long skip connections", "long skips",
             "encoder decoder skips"),
    "sinks": ("attention sink", "attention sinks", "sink token", "sink tokens", "register token", "register tokens",
              "learned sink", "learned registers"),
    "mtp": ("multi token prediction", "mtp", "next n token prediction", "predict multiple tokens",
            "multiple future tokens"),
    "layerscale": ("layerscale", "layer scale", "branch scale", "per channel branch gain"),
    "mup": ("mup", "mu p", "maximal update parametrization", "maximal update parameterization",
            "mu parametrization", "mu parameterization"),
    "checkpointing": ("activation checkpointing", "gradient checkpointing", "activation recomputation",
                      "recompute activations", "rematerialization", "checkpointing"),
    "flash": ("flash attention", "flashattention", "flash attn", "fused attention kernel"),
    "doc_mask": ("document masking", "document mask", "document boundaries", "intra document", "doc masking",
                 "cross document attention", "bos aligned", "document aware"),
    "seq_warmup": ("sequence length warmup", "sequence warmup", "context length warmup", "seq len warmup",
                   "progressive sequence length", "sequence length curriculum", "sequence length schedule"),
    "embed_scale": ("embedding scale", "embedding multiplier", "embedding scaling", "scaled embeddings"),
    "cautious": ("cautious", "cautious optimizer", "cautious updates", "cautious weight decay"),
    "fused_ce": ("fused cross entropy", "chunked cross entropy", "chunked loss", "fused loss", "liger"),
}

# --------------------------------------------------------------------- techniques described, not named
CUES: dict[str, tuple[str, ...]] = {
    "switch:temperature": (
        "learn|learnable|learned|trainable|train|parametrize|parameterize|per head + scale|scalar|multiplier|"
        "temperature|gain|factor|coefficient + attention logit|attention logits|attention score|attention scores|"
        "attention softmax|softmax|score|scores|q k|qk|dot product|@query + !norm|norms|normalization|rmsnorm|layernorm",),
    "switch:label_smoothing": (
        "soft|soften|softened|smooth|smoothed|smoothing + target|targets|label|labels|one hot|onehot|ground truth",
        "spread|distribute|redistribute|reserve|move + mass|probability + uniform|uniformly|vocabulary|other tokens",),
    "switch:zloss": ("penalize|penalty|penalise|regularize|auxiliary|aux|square|squared + log sum exp|logsumexp|"
                     "normalizer|partition|log z",),
    "switch:grad_clip": ("cap|limit|bound|clamp|rescale|clip|constrain|threshold|normalize + gradient|gradients|"
                         "grad|grads + norm|magnitude|size|l2 norm",),
    "switch:ema": ("shadow|averaged|running average|moving average|average|averaging + weights|parameters|params|"
                   "copy|model|iterates|checkpoint",),
    "switch:tying": ("reuse|share|shared|same|tie|tied|transpose|= + @embedding + @unembedding|@logit",),
    "switch:value_residual": ("@value|v|values|value + 1st layer|1st block|earliest layer|initial layer|1st attention layer|"
                              "layer 1 + mix|blend|add|residual|interpolate|lerp|combine|skip|reuse|carry",),
    "block_layout:parallel": ("@attention + @mlp + same input|same normalized input|in parallel|simultaneously|"
                              "side by side|at once|one step|concurrently|same residual input|both from",),
    "attention_kind:sliding_window": (
        "restrict|limit|only|confine|mask|see|attend|look back|cap + previous|last|past|preceding|recent|nearest|"
        "local + position|positions|token|tokens|@key|neighbour|neighbor|neighbours|neighbors + !document|doc|bos",),
    "attention_kind:mqa": ("single|one|1 + @key|kv + head|heads + !groups|group",),
    "attention_kind:gqa": ("share|shared|sharing|reuse + @key|@value|kv + head|heads|group|groups|query heads",),
    "switch:stochastic_depth": ("skip|drop|bypass|omit|dropout + random|randomly|stochastic|stochastically|"
                                "probability + block|blocks|layer|layers|residual block|residual blocks",),
    "switch:dropout": ("zero out|drop|mask + random|randomly + activation|activations|unit|units|neuron|"
                       "neurons|element|elements|channel|channels|feature|features|weights|probabilities|"
                       "@attention|entries",),
    "switch:x0skip": ("initial|original|x0|1st layer + @embedding|embedding + mix|mixing|blend|blending|feed|"
                      "skip|back into|into every|inject",),
    "switch:value_embeddings": ("@value|value|values|v + own|separate|extra|additional|dedicated + embedding|"
                                "embedding table|@embedding",),
    "switch:token_shift": ("previous|prior|preceding|last + token|position + mix|blend|shift|smear|add|interpolate|"
                           "lerp + !attend|restrict|only|window|mask",),
    "switch:unet": ("skip|shortcut|connection|connections + early|1st half|encoder|lower|shallow + late|later|"
                    "2nd half|decoder|upper|mirror|symmetric|deep",),
    "switch:layerscale": ("per channel|channelwise|diagonal|vector + gain|scale|scaling|multiplier + branch|"
                          "branches|sublayer|block output|residual branch|@attention|@mlp",),
    "switch:norm_gains": ("learn|learnable|learned|trainable|affine|elementwise|per channel + weight|weights|gain|"
                          "gains|scale|parameter|parameters + @norm|@switch:qknorm|rmsnorm|rms|layernorm|norm|norms",),
    "switch:embed_scale": ("scale|scaled|multiply|multiplied|multiplier|times + @embedding + sqrt|square root",),
    "switch:seq_warmup": ("short|shorter|small + sequence|sequences|context|seq len + grow|increase|ramp|"
                          "progressive|lengthen|longer|then|first",),
    "switch:checkpointing": ("recompute|recomputation|recomputing|rematerialize|rematerializing + activation|"
                             "activations|forward",),
    "switch:cautious": ("agree|agreement|disagree|disagrees|align|aligned|same sign|opposite sign + sign|direction + "
                        "gradient|grad|gradients",),
    "switch:resid_lambdas": ("learn|learned|learnable|trainable + scale|scalar|scalars|gain|multiplier|weight + "
                             "residual|residual contribution|residual stream + !channel|vector|diagonal",),
    "position:alibi": ("bias|biases|penalty|penalties|penalize + distance|relative position|how far",),
    "softcap": ("tanh|squash|squashing|saturate|bound + @logit|@unembedding + !gradient|grad",),
    "switch:moe": ("route|router|routing|dispatch|send + expert|experts",),
    "switch:mtp": ("predict|prediction|forecast + several|multiple|future|next 2|2 + token|tokens + !drop",),
}

# ------------------------------------------------------------------------------ where techniques act
# parts that belong to what a technique is, not to where it applies
INTRINSIC_PARTS = {"block_layout": {"attention", "mlp", "norm", "residual"},
                   "attention_kind": {"attention", "query", "key", "value"},
                   "position": {"attention", "query", "key", "embedding"},
                   "switch:qknorm": {"attention", "query", "key", "norm"},
                   "switch:temperature": {"attention", "query", "key", "logit"},
                   "norm_type": {"norm"}, "activation": {"mlp", "proj", "out_proj", "matrix"}, "switch:zloss": {"logit", "loss"},
                   "switch:label_smoothing": {"loss"}, "switch:norm_gains": {"norm"},
                   "switch:ema": {"parameters", "eval"}, "switch:grad_clip": {"norm", "parameters"},
                   "switch:value_embeddings": {"value_embedding", "attention", "value", "embedding"},
                   "switch:softcap": {"logit", "unembedding"}, "switch:bias": {"proj"},
                   "switch:x0skip": {"attention", "mlp", "embedding", "scalar"},
                   "switch:resid_lambdas": {"attention", "mlp", "scalar"},
                   "switch:tying": {"matrix", "parameters"},
                   "switch:value_residual": {"attention", "value"},
                   "switch:moe": {"mlp", "proj", "out_proj", "matrix"}, "switch:stochastic_depth": {"attention", "mlp"},
                   "switch:token_shift": {"embedding"}, "switch:unet": {"attention", "mlp"},
                   "switch:sinks": {"attention", "key", "value"}, "switch:mtp": {"unembedding", "loss", "logit"},
                   "switch:flash": {"attention"},
                   "switch:doc_mask": {"attention"}, "momentum_kind": {"muon", "matrix", "adamw"}}
# concepts that together name a technique ("normalise queries and keys" is QK-norm)
COMPOUNDS = {"switch:qknorm": ({"query", "key", "norm"},)}
# a gate named with an activation is that activation's gated unit ("silu(x W1) * (x W3)" in a gated MLP)
GATED = {"silu": "swiglu", "gelu": "geglu", "relu": "reglu"}
# where a technique applies when an idea does not say
DEFAULT_SCOPES = {"activation": "mlp", "position": "attention", "attention_kind": "attention",
                  "switch:qknorm": "attention", "switch:zloss": "logit", "switch:label_smoothing": "loss",
                  "switch:tying": "embedding+unembedding", "switch:temperature": "attention",
                  "switch:gate": "attention", "switch:value_residual": "attention", "switch:moe": "mlp",
                  "switch:sinks": "attention", "switch:flash": "attention", "switch:doc_mask": "attention"}
# the member a family falls back to when its present member is removed
NONE_MEMBERS = {"position": "nope", "norm_type": "no_norm", "init": "normal", "momentum_kind": "heavy_ball",
                "activation:relu2": "relu"}  # ("drop the square": plain ReLU)
# the noun a family member's number counts ("two key-value heads shared by the four query heads")
MEMBER_UNITS = {"gqa": ("kv", "key", "group", "groups"),
                "sliding_window": ("token", "tokens", "window", "position", "positions")}
# the noun a technique's number counts ("4 experts"): other numbers beside it are other settings ("top-1")
SWITCH_UNITS = {"switch:moe": ("expert", "experts"), "switch:sinks": ("token", "tokens", "sink", "sinks"),
                "switch:mtp": ("token", "tokens", "head", "heads")}
# what a technique's number means in another unit: n tokens predicted are n - 1 heads beyond the next-token one
UNIT_OFFSETS = {"switch:mtp": {"token": -1.0, "tokens": -1.0}}
# the setting a technique has when named alone ("an MTP head" is one extra head): stated, it says nothing more
USUAL_SETTINGS = {"switch:mtp": 1.0}
# members whose number is part of the choice ("a 256-token window", "2 KV groups", "std 0.02")
NUMBERED_MEMBERS = {"attention_kind": ("sliding_window", "gqa"),
                    "init": ("zero", "normal", "trunc_normal", "uniform", "orthogonal", "xavier", "kaiming", "lecun",
                             "scaled")}
# techniques that say how another is done when named beside it ("a smear gate", "with a learned gate")
DETAIL_SWITCHES = ("switch:gate",)
# what a part means for a technique ("tie the embedding to the output projection": the output head)
PART_ALIASES = {"switch:tying": {"proj": "unembedding", "out_proj": "unembedding"}}
# techniques whose value is a probability or fraction (10% dropout is 0.1)
FRACTION_SWITCHES = frozenset({"switch:dropout", "switch:label_smoothing", "switch:stochastic_depth"})
# techniques that take a numeric setting, and its plausible range: a number outside it is something else
# ("keeps the partition function near 1" is no z-loss weight); techniques absent here take no number at all
SWITCH_SETTINGS: dict[str, tuple[float, float]] = {
    "switch:dropout": (0.0, 0.9), "switch:label_smoothing": (0.0, 0.5), "switch:stochastic_depth": (0.0, 0.9),
    "switch:zloss": (0.0, 0.1), "switch:grad_clip": (1e-3, 100.0), "switch:ema": (0.5, 1.0),
    "switch:moe": (2.0, 4096.0), "switch:layerscale": (0.0, 10.0),
    "switch:mtp": (1.0, 16.0), "switch:sinks": (1.0, 1024.0),
}
