//! Topic exchange routing: a trie of binding patterns.
//!
//! Semantics follow RabbitMQ's topic exchange (`rabbit_exchange_type_topic`
//! and `rabbit_db_topic_exchange` in rabbitmq-server):
//!
//! * Binding patterns and routing keys are split into *words* on `.`.
//! * The empty string is **zero** words (RabbitMQ's
//!   `split_topic_key_binary(<<>>) -> []`), so the routing key `""` is matched
//!   by the patterns `""`, `#`, `#.#`, ... but not by `*`.
//! * Every other string is split on every `.`, keeping empty words:
//!   `"."` is two empty words, `"a..b"` is `a`, `""`, `b`, and `"a."` is `a`,
//!   `""`.  An empty word is an ordinary word: `*` matches it.
//! * In a pattern, the word `*` matches exactly one word and the word `#`
//!   matches zero or more words.  Any other word, including ones merely
//!   containing `*` or `#` such as `a*`, matches only itself.  In a routing
//!   key, `*` and `#` are ordinary words.
//!
//! RabbitMQ's master branch additionally rejects binding keys with more than
//! two `#` words; that is a bind-time policy decision left to the caller.  The
//! trie itself accepts any pattern and stays polynomial for patterns with
//! many `#` words (see [`TopicTrie::route`]).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// The pattern word matching exactly one routing-key word.
const STAR: &str = "*";
/// The pattern word matching zero or more routing-key words.
const HASH: &str = "#";

/// Splits a routing key or binding pattern into words, RabbitMQ style: the
/// empty string has no words, anything else is split on every `.`.
fn words(key: &str) -> impl Iterator<Item = &str> {
    (!key.is_empty())
        .then(|| key.split('.'))
        .into_iter()
        .flatten()
}

/// One trie node: the bindings whose pattern ends here, plus the edges to
/// the nodes for longer patterns.
#[derive(Debug, Clone)]
struct Node<D> {
    /// Edges for literal words (never `*` or `#`).
    words: HashMap<Box<str>, Node<D>>,
    /// Edge for the `*` wildcard.
    star: Option<Box<Node<D>>>,
    /// Edge for the `#` wildcard.
    hash: Option<Box<Node<D>>>,
    /// Destinations bound with the pattern that ends at this node.
    dests: HashSet<D>,
}

impl<D> Node<D> {
    fn new() -> Self {
        Node {
            words: HashMap::new(),
            star: None,
            hash: None,
            dests: HashSet::new(),
        }
    }

    /// True when the node holds no bindings and has no children, so its
    /// parent may drop it.
    fn is_prunable(&self) -> bool {
        self.dests.is_empty() && self.words.is_empty() && self.star.is_none() && self.hash.is_none()
    }

    /// Number of nodes in this subtree (for tests of pruning).
    #[cfg(test)]
    fn count(&self) -> usize {
        1 + self.words.values().map(Node::count).sum::<usize>()
            + self.star.as_deref().map_or(0, Node::count)
            + self.hash.as_deref().map_or(0, Node::count)
    }
}

impl<D: Eq + Hash> Node<D> {
    /// Returns the child for `word`, creating it if needed.
    fn child_or_insert(&mut self, word: &str) -> &mut Node<D> {
        match word {
            STAR => self.star.get_or_insert_with(|| Box::new(Node::new())),
            HASH => self.hash.get_or_insert_with(|| Box::new(Node::new())),
            _ => self.words.entry(Box::from(word)).or_insert_with(Node::new),
        }
    }

    /// Removes `dest` from the node reached by `path`, pruning nodes left
    /// empty on the way back up.  Returns whether the binding existed.
    fn remove(&mut self, path: &[&str], dest: &D) -> bool {
        let Some((&word, rest)) = path.split_first() else {
            return self.dests.remove(dest);
        };
        match word {
            STAR | HASH => {
                let slot = if word == STAR {
                    &mut self.star
                } else {
                    &mut self.hash
                };
                let Some(child) = slot.as_deref_mut() else {
                    return false;
                };
                let removed = child.remove(rest, dest);
                if removed && child.is_prunable() {
                    *slot = None;
                }
                removed
            }
            _ => {
                let Some(child) = self.words.get_mut(word) else {
                    return false;
                };
                let removed = child.remove(rest, dest);
                if removed && child.is_prunable() {
                    self.words.remove(word);
                }
                removed
            }
        }
    }
}

/// The bindings of one topic exchange, indexed for routing.
///
/// `D` is the binding destination (a queue or exchange name, an id, ...).
/// A binding is the pair (pattern, destination); binding the same pair twice
/// is a no-op.  See the module documentation for the matching rules.
#[derive(Debug, Clone)]
pub struct TopicTrie<D> {
    root: Node<D>,
    len: usize,
}

impl<D: Clone + Eq + Hash> Default for TopicTrie<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: Clone + Eq + Hash> TopicTrie<D> {
    /// Creates an empty trie.
    pub fn new() -> Self {
        TopicTrie {
            root: Node::new(),
            len: 0,
        }
    }

    /// Adds a binding; returns false if (pattern, dest) was already bound.
    pub fn bind(&mut self, pattern: &str, dest: D) -> bool {
        let mut node = &mut self.root;
        for word in words(pattern) {
            node = node.child_or_insert(word);
        }
        let added = node.dests.insert(dest);
        if added {
            self.len += 1;
        }
        added
    }

    /// Removes a binding; returns false if it was not bound.
    ///
    /// Trie nodes left without bindings or children are freed.
    pub fn unbind(&mut self, pattern: &str, dest: &D) -> bool {
        let path: Vec<&str> = words(pattern).collect();
        let removed = self.root.remove(&path, dest);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Pushes every destination whose pattern matches `routing_key` into `out`, each at most once.
    ///
    /// "At most once" is per call: destinations already in `out` are not
    /// looked at.  The order of the pushed destinations is unspecified.
    ///
    /// The walk visits each (trie node, key position) state at most once once
    /// two `#` edges have been taken (the only way a state can be reached
    /// twice), as RabbitMQ does, so the cost is bounded by
    /// O(nodes × words²) rather than growing exponentially with the number
    /// of `#` words in a pattern.
    pub fn route(&self, routing_key: &str, out: &mut Vec<D>) {
        if self.len == 0 {
            return;
        }
        let key: Vec<&str> = words(routing_key).collect();
        let mut walk = Walk {
            key: &key,
            seen: HashSet::new(),
            matched: Vec::new(),
        };
        walk.visit(&self.root, 0, 0);
        match walk.matched.as_slice() {
            [] => {}
            [node] => out.extend(node.dests.iter().cloned()),
            nodes => {
                let mut pushed: HashSet<&D> = HashSet::new();
                for node in nodes {
                    for dest in &node.dests {
                        if pushed.insert(dest) {
                            out.push(dest.clone());
                        }
                    }
                }
            }
        }
    }

    /// True when there are no bindings.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Number of trie nodes, including the root (for tests of pruning).
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.root.count()
    }
}

/// State of one routing walk over the trie.
struct Walk<'t, 'k, D> {
    /// The routing key's words.
    key: &'k [&'k str],
    /// (node address, key position) states already visited; only recorded
    /// below two or more `#` edges, where repeats are possible.
    seen: HashSet<(usize, usize)>,
    /// Nodes with bindings whose pattern matched the whole key.
    matched: Vec<&'t Node<D>>,
}

impl<'t, D> Walk<'t, '_, D> {
    /// Matches the key's words from `pos` on against the patterns below
    /// `node`; `hashes` counts the `#` edges on the path to `node`.
    ///
    /// A trie is a tree, so `hashes` is the same on every visit of a node.
    /// With at most one `#` on the path, a (node, pos) state has a single
    /// derivation and cannot repeat; with two or more it can (`#.#` against
    /// `a` matches in two ways), so such states are memoized.
    fn visit(&mut self, node: &'t Node<D>, pos: usize, hashes: u32) {
        if hashes >= 2 && !self.seen.insert((std::ptr::from_ref(node).addr(), pos)) {
            return;
        }
        match self.key.get(pos) {
            None => {
                if !node.dests.is_empty() {
                    self.matched.push(node);
                }
                // A trailing `#` matches zero words.
                if let Some(hash) = node.hash.as_deref() {
                    self.visit(hash, pos, hashes + 1);
                }
            }
            Some(&word) => {
                // `*` and `#` are never literal edges, so a key word `*`
                // reaches the star edge once, below, not twice.
                if let Some(child) = node.words.get(word) {
                    self.visit(child, pos + 1, hashes);
                }
                if let Some(star) = node.star.as_deref() {
                    self.visit(star, pos + 1, hashes);
                }
                if let Some(hash) = node.hash.as_deref() {
                    for next in pos..=self.key.len() {
                        self.visit(hash, next, hashes + 1);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Independent reference splitter: "" is no words, else split on '.'.
    fn ref_split(s: &str) -> Vec<&str> {
        if s.is_empty() {
            Vec::new()
        } else {
            s.split('.').collect()
        }
    }

    /// Naive recursive reference matcher over word lists.
    fn ref_match(pattern: &[&str], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&"#", rest)) => (0..=key.len()).any(|i| ref_match(rest, &key[i..])),
            Some((&"*", rest)) => !key.is_empty() && ref_match(rest, &key[1..]),
            Some((word, rest)) => key.first() == Some(word) && ref_match(rest, &key[1..]),
        }
    }

    fn routed<D: Clone + Eq + Hash + Ord>(trie: &TopicTrie<D>, key: &str) -> Vec<D> {
        let mut out = Vec::new();
        trie.route(key, &mut out);
        let n = out.len();
        out.sort();
        out.dedup();
        assert_eq!(n, out.len(), "duplicate destinations for key {key:?}");
        out
    }

    fn matches(pattern: &str, key: &str) -> bool {
        let mut trie = TopicTrie::new();
        trie.bind(pattern, ());
        let mut out = Vec::new();
        trie.route(key, &mut out);
        assert!(out.len() <= 1);
        !out.is_empty()
    }

    #[test]
    fn literal_and_wildcards() {
        assert!(matches("a.b.c", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(matches("a.*.c", "a.x.c"));
        assert!(!matches("a.*.c", "a.c"));
        assert!(!matches("a.*.c", "a.x.y.c"));
        assert!(matches("a.#.c", "a.c"));
        assert!(matches("a.#.c", "a.x.c"));
        assert!(matches("a.#.c", "a.x.y.c"));
        assert!(!matches("a.#.c", "a.x.y"));
        assert!(matches("a.#", "a"));
        assert!(matches("a.#", "a.b.c"));
        assert!(!matches("a.#", "b"));
        assert!(!matches("a.#", "ab"));
        assert!(matches("#.a", "a"));
        assert!(matches("#.a", "x.y.a"));
        assert!(!matches("#.a", "a.x"));
        assert!(matches("#", "anything.at.all"));
        assert!(matches("*.#", "a"));
        assert!(!matches("*.#", ""));
        assert!(matches("#.*.#", "a.b.c"));
        assert!(!matches("#.*.#", ""));
    }

    #[test]
    fn wildcards_are_whole_words_only() {
        assert!(matches("a*", "a*"));
        assert!(!matches("a*", "ab"));
        assert!(!matches("a#", "a"));
        assert!(!matches("a#", "a.b"));
        // Wildcards in the routing key are ordinary words.
        assert!(!matches("a", "*"));
        assert!(!matches("a", "#"));
        assert!(matches("*", "#"));
        assert!(matches("#", "*"));
        assert!(!matches("a.b", "a.*"));
    }

    #[test]
    fn empty_routing_key_is_zero_words() {
        assert!(matches("", ""));
        assert!(matches("#", ""));
        assert!(matches("#.#", ""));
        assert!(matches("#.#.#", ""));
        assert!(!matches("*", ""));
        assert!(!matches(".", ""));
        assert!(!matches("a", ""));
        assert!(!matches("", "a"));
        assert!(!matches("", "."));
    }

    #[test]
    fn empty_words_are_words() {
        // "." is two empty words.
        assert!(matches(".", "."));
        assert!(matches("*.*", "."));
        assert!(matches("*.", "."));
        assert!(matches(".*", "."));
        assert!(matches("#", "."));
        assert!(matches("#.#", "."));
        assert!(!matches("*", "."));
        assert!(!matches("", "."));
        // Empty middle word.
        assert!(matches("a..b", "a..b"));
        assert!(matches("a.*.b", "a..b"));
        assert!(matches("a.#.b", "a..b"));
        assert!(!matches("a.b", "a..b"));
        assert!(!matches("a..b", "a.b"));
        assert!(!matches("a..b", "a.x.b"));
        // Trailing and leading empty words.
        assert!(matches("a.*", "a."));
        assert!(matches("a.#", "a."));
        assert!(matches("a.", "a."));
        assert!(!matches("a", "a."));
        assert!(!matches("a.", "a"));
        assert!(matches(".a", ".a"));
        assert!(matches("*.a", ".a"));
        assert!(!matches("a", ".a"));
        assert!(matches(".#", ".0.a.b.c"));
        assert!(!matches(".*", ".0.a.b.c"));
        assert!(matches(".*.a.b.c", ".0.a.b.c"));
    }

    /// The binding table and expectations of RabbitMQ's routing_SUITE
    /// `topic1` test (rabbitmq-server deps/rabbit/test/routing_SUITE.erl),
    /// minus its binding-arguments aliasing case.
    #[test]
    fn rabbitmq_routing_suite_vectors() {
        let bindings: &[(&str, &str)] = &[
            ("a.b.c", "t1"),
            ("a.*.c", "t2"),
            ("a.#.b", "t3"),
            ("a.b.b.c", "t4"),
            ("#", "t5"),
            ("#.#", "t6"),
            ("#.b", "t7"),
            ("*.*", "t8"),
            ("a.*", "t9"),
            ("*.b.c", "t10"),
            ("a.#", "t11"),
            ("a.#.#", "t12"),
            ("b.b.c", "t13"),
            ("a.b.b", "t14"),
            ("a.b", "t15"),
            ("b.c", "t16"),
            ("", "t17"),
            ("*.*.*", "t18"),
            ("vodka.martini", "t19"),
            ("a.b.c", "t20"),
            ("*.#", "t21"),
            ("#.*.#", "t22"),
            ("*.#.#", "t23"),
            ("*", "t25"),
            ("#.b.#", "t26"),
        ];
        let mut trie = TopicTrie::new();
        for (pattern, dest) in bindings {
            assert!(trie.bind(pattern, dest.to_string()));
        }
        assert_eq!(trie.len(), bindings.len());
        let check = |trie: &TopicTrie<String>, cases: &[(&str, &[&str])]| {
            for (key, expected) in cases {
                let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
                expected.sort();
                assert_eq!(routed(trie, key), expected, "routing key {key:?}");
            }
        };
        check(
            &trie,
            &[
                (
                    "a.b.c",
                    &[
                        "t1", "t2", "t5", "t6", "t10", "t11", "t12", "t18", "t20", "t21", "t22",
                        "t23", "t26",
                    ],
                ),
                (
                    "a.b",
                    &[
                        "t3", "t5", "t6", "t7", "t8", "t9", "t11", "t12", "t15", "t21", "t22",
                        "t23", "t26",
                    ],
                ),
                (
                    "a.b.b",
                    &[
                        "t3", "t5", "t6", "t7", "t11", "t12", "t14", "t18", "t21", "t22", "t23",
                        "t26",
                    ],
                ),
                ("", &["t5", "t6", "t17"]),
                ("b.c.c", &["t5", "t6", "t18", "t21", "t22", "t23", "t26"]),
                (
                    "a.a.a.a.a",
                    &["t5", "t6", "t11", "t12", "t21", "t22", "t23"],
                ),
                ("vodka.gin", &["t5", "t6", "t8", "t21", "t22", "t23"]),
                (
                    "vodka.martini",
                    &["t5", "t6", "t8", "t19", "t21", "t22", "t23"],
                ),
                (
                    "b.b.c",
                    &["t5", "t6", "t10", "t13", "t18", "t21", "t22", "t23", "t26"],
                ),
                ("nothing.here.at.all", &["t5", "t6", "t21", "t22", "t23"]),
                ("oneword", &["t5", "t6", "t21", "t22", "t23", "t25"]),
            ],
        );
        for i in [1, 5, 11, 19, 21] {
            let (pattern, dest) = bindings[i - 1];
            assert!(trie.unbind(pattern, &dest.to_string()));
        }
        check(
            &trie,
            &[
                (
                    "a.b.c",
                    &["t2", "t6", "t10", "t12", "t18", "t20", "t22", "t23", "t26"],
                ),
                (
                    "a.b",
                    &[
                        "t3", "t6", "t7", "t8", "t9", "t12", "t15", "t22", "t23", "t26",
                    ],
                ),
                (
                    "a.b.b",
                    &["t3", "t6", "t7", "t12", "t14", "t18", "t22", "t23", "t26"],
                ),
                ("", &["t6", "t17"]),
                ("b.c.c", &["t6", "t18", "t22", "t23", "t26"]),
                ("a.a.a.a.a", &["t6", "t12", "t22", "t23"]),
                ("vodka.gin", &["t6", "t8", "t22", "t23"]),
                ("vodka.martini", &["t6", "t8", "t22", "t23"]),
                ("b.b.c", &["t6", "t10", "t13", "t18", "t22", "t23", "t26"]),
                ("nothing.here.at.all", &["t6", "t22", "t23"]),
                ("oneword", &["t6", "t22", "t23", "t25"]),
            ],
        );
    }

    #[test]
    fn destinations_are_pushed_once() {
        let mut trie = TopicTrie::new();
        trie.bind("a.*", 1);
        trie.bind("*.b", 1);
        trie.bind("#", 1);
        trie.bind("#.#", 1);
        trie.bind("a.#.#.b", 1);
        trie.bind("#", 2);
        let mut out = vec![1];
        trie.route("a.b", &mut out);
        out.sort();
        // The pre-existing 1 is left alone; 1 and 2 are each pushed once.
        assert_eq!(out, vec![1, 1, 2]);
    }

    #[test]
    fn bind_unbind_bookkeeping_and_pruning() {
        let mut trie = TopicTrie::new();
        assert!(trie.is_empty());
        assert_eq!(trie.node_count(), 1);
        assert!(trie.bind("a.b", "q1"));
        assert!(!trie.bind("a.b", "q1"));
        assert!(trie.bind("a.b", "q2"));
        assert!(trie.bind("a", "q1"));
        assert!(trie.bind("a.*.#", "q1"));
        assert!(trie.bind("", "q1"));
        assert_eq!(trie.len(), 5);
        assert!(!trie.is_empty());

        assert!(!trie.unbind("a.b", &"q3"));
        assert!(!trie.unbind("a.c", &"q1"));
        assert!(!trie.unbind("a.*", &"q1"));
        assert!(!trie.unbind("a.#", &"q1"));
        assert!(!trie.unbind("#", &"q1"));
        assert_eq!(trie.len(), 5);

        // Removing a prefix binding keeps the longer pattern reachable.
        assert!(trie.unbind("a", &"q1"));
        assert!(!trie.unbind("a", &"q1"));
        assert_eq!(routed(&trie, "a.b"), vec!["q1", "q2"]);
        assert_eq!(routed(&trie, "a"), Vec::<&str>::new());

        assert!(trie.unbind("a.*.#", &"q1"));
        // root, a, a.b
        assert_eq!(trie.node_count(), 3);
        assert!(trie.unbind("a.b", &"q1"));
        assert!(trie.unbind("a.b", &"q2"));
        assert_eq!(trie.node_count(), 1);
        assert_eq!(trie.len(), 1);
        assert!(trie.unbind("", &"q1"));
        assert!(trie.is_empty());
        assert_eq!(trie.len(), 0);
        assert_eq!(trie.node_count(), 1);
        assert_eq!(routed(&trie, ""), Vec::<&str>::new());
    }

    #[test]
    fn many_hashes_do_not_blow_up() {
        let mut trie = TopicTrie::new();
        let hashes = vec!["#"; 40].join(".");
        // Never matches: forces the whole search space to be explored.
        trie.bind(&format!("{hashes}.b"), 1);
        trie.bind(&format!("#.a.#.a.#.a.#.a.#.a.#.{hashes}.c"), 2);
        trie.bind(&hashes, 3);
        trie.bind("#.*.#.*.#.*.#", 4);
        let key = vec!["a"; 127].join(".");
        assert_eq!(key.len(), 253);
        let start = std::time::Instant::now();
        assert_eq!(routed(&trie, &key), vec![3, 4]);
        assert_eq!(routed(&trie, &format!("{key}.c")), vec![2, 3, 4]);
        assert_eq!(routed(&trie, ""), vec![3]);
        // Generous bound: exponential behaviour would take forever.
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Bind(String, u8),
        Unbind(String, u8),
        Route(String),
    }

    fn word_string(max_words: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec!["a", "b", "", "*", "#"]),
            0..max_words,
        )
        .prop_map(|w| w.join("."))
    }

    fn any_string() -> impl Strategy<Value = String> {
        prop_oneof![word_string(7), "[ab*#.]{0,10}"]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any_string(), 0u8..4).prop_map(|(p, d)| Op::Bind(p, d)),
            (any_string(), 0u8..4).prop_map(|(p, d)| Op::Unbind(p, d)),
            any_string().prop_map(Op::Route),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn route_agrees_with_reference(ops in prop::collection::vec(op(), 1..60)) {
            let mut trie = TopicTrie::new();
            let mut model: BTreeSet<(String, u8)> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Bind(p, d) => {
                        // "" and a single empty word are the same pattern.
                        let fresh = model.insert((p.clone(), d));
                        prop_assert_eq!(trie.bind(&p, d), fresh);
                    }
                    Op::Unbind(p, d) => {
                        let present = model.remove(&(p.clone(), d));
                        prop_assert_eq!(trie.unbind(&p, &d), present);
                    }
                    Op::Route(key) => {
                        let key_words = ref_split(&key);
                        let expected: BTreeSet<u8> = model
                            .iter()
                            .filter(|(p, _)| ref_match(&ref_split(p), &key_words))
                            .map(|&(_, d)| d)
                            .collect();
                        let mut out = Vec::new();
                        trie.route(&key, &mut out);
                        let got: BTreeSet<u8> = out.iter().copied().collect();
                        prop_assert_eq!(got.len(), out.len(), "duplicates for {:?}", key);
                        prop_assert_eq!(got, expected, "key {:?}", key);
                    }
                }
                prop_assert_eq!(trie.len(), model.len());
                prop_assert_eq!(trie.is_empty(), model.is_empty());
            }
            // Unbinding everything prunes the trie back to its root.
            for (p, d) in std::mem::take(&mut model) {
                prop_assert!(trie.unbind(&p, &d));
            }
            prop_assert!(trie.is_empty());
            prop_assert_eq!(trie.node_count(), 1);
        }
    }
}
