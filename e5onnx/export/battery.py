"""The parity battery: the texts every exported variant is checked on.

It holds the four MS-MARCO examples of the e5-small model card (https://huggingface.co/intfloat/e5-small),
a batch of mixed lengths (so padding is exercised), one text far over 512 tokens (truncation), empty and
whitespace-only strings, and accented, CJK, RTL, combining-mark and emoji text.
"""

MODEL_CARD_EXAMPLES = (
    "query: how much protein should a female eat",
    "query: summit define",
    "passage: As a general guideline, the CDC's average requirement of protein for women ages 19 to 70 is 46 "
    "grams per day. But, as you can see from this chart, you'll need to increase that if you're expecting or "
    "training for a marathon. Check out the chart below to see how much protein you should be eating each day.",
    "passage: Definition of summit for English Language Learners. : 1  the highest point of a mountain : the "
    "top of a mountain. : 2  the highest level. : 3  a meeting or series of meetings between the leaders of "
    "two or more governments.",
)

MIXED_LENGTHS = (
    "query: a",
    "query: what is the capital of france",
    "passage: Paris is the capital and most populous city of France.",
    "passage: The mitochondrion is an organelle found in the cells of most eukaryotes. It uses aerobic "
    "respiration to generate adenosine triphosphate, which is used throughout the cell as a source of "
    "chemical energy. Mitochondria have their own genome, inherited from the mother.",
    "query: 42",
    "passage: Photosynthesis converts light energy into chemical energy stored in glucose; chlorophyll absorbs "
    "mostly blue and red light, reflecting green, which is why leaves look green to us.",
)

EDGE_CASES = (
    "",
    " ",
    "\t \n  ",
    "query: Crème brûlée, façade, naïve, Ångström, Œuvre, São Paulo, Zürich",
    "passage: 東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "query: 🤖 robots ❤️ emoji 🎉 👩‍👩‍👧 flags 🇫🇷",
    "passage: مرحبا بالعالم — Привет, мир — Γειά σου Κόσμε — שלום עולם",
    "query: e\u0301te\u0301 (combining accents) and zero\u200bwidth\u00a0spaces",
)


def long_text(words=900):
    """A text of ``words`` words, far over 512 word pieces, so truncation is exercised."""
    base = ("passage: In 1905 the physicist published four papers on the photoelectric effect, Brownian "
            "motion, special relativity and mass-energy equivalence, which changed modern science. ").split()
    return " ".join(base[i % len(base)] for i in range(words))


def battery():
    """All battery texts, in a fixed order: list of str (about 20 texts)."""
    return [*MODEL_CARD_EXAMPLES, *MIXED_LENGTHS, long_text(), *EDGE_CASES]
