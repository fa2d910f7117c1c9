"""Tutorial 5: topics -- topic exchange with * (exactly one word) and
# (zero or more words) wildcards."""

from amqp_helpers import check_routing

PUBLISHED = [
    "quick.orange.rabbit",       # Q1 Q2
    "lazy.orange.elephant",      # Q1 Q2
    "quick.orange.fox",          # Q1
    "lazy.brown.fox",            # Q2
    "lazy.pink.rabbit",          # Q2 -- once, although both its bindings match
    "quick.brown.fox",           # only "all"
    "orange",                    # only "all"
    "quick.orange.new.rabbit",   # only "all"
    "lazy.orange.new.rabbit",    # Q2
    "quick.orange.male.rabbit",  # only "all"
    "lazy",                      # Q2 (# matches zero words)
    "kern.critical",             # kern -- once, both its bindings match
    "kern.info",                 # kern
    "app.critical",              # kern
    "kern.disk.critical",        # only "all"
    "Quick.Orange.Rabbit",       # only "all": matching is case sensitive
    "a.b.c.d.e.f.g",             # only "all"
]


def test_topic_exchange_tutorial_bindings():
    check_routing(
        "topic", "topic_logs",
        bindings={
            "Q1": ["*.orange.*"],
            "Q2": ["*.*.rabbit", "lazy.#"],
            "all": ["#"],
            "kern": ["kern.*", "*.critical"],
        },
        published=PUBLISHED,
        expected={
            "Q1": ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"],
            "Q2": ["quick.orange.rabbit", "lazy.orange.elephant", "lazy.brown.fox",
                   "lazy.pink.rabbit", "lazy.orange.new.rabbit", "lazy"],
            "all": PUBLISHED,
            "kern": ["kern.critical", "kern.info", "app.critical"],
        })


def test_topic_exchange_hash_in_middle_and_exact_keys():
    check_routing(
        "topic", "topic_more",
        bindings={
            "hash_mid": ["a.#.z"],
            "exact": ["a.b.c"],          # no wildcard: behaves like direct
            "star_star": ["*.*"],
            "hash_tail": ["x.y.#"],
        },
        published=["a.z", "a.b.z", "a.b.c.z", "a.b.c", "b.z", "a.zz",
                   "x.y", "x.y.z", "x.yy.z", "q.r", "q"],
        expected={
            "hash_mid": ["a.z", "a.b.z", "a.b.c.z"],
            "exact": ["a.b.c"],
            "star_star": ["a.z", "b.z", "a.zz", "x.y", "q.r"],
            "hash_tail": ["x.y", "x.y.z"],
        })
