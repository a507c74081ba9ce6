//! The dependency graph between services: the waves to start and stop them in, the cycles that
//! forbid any order, and the closures used to stop dependents and start dependencies.
//!
//! Pure functions of the declared edges, so the supervisor's ordering rules are tested
//! directly. Every result is sorted by name, so it never depends on the order in which services
//! were declared.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A service and the names of the services it depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node<'a> {
    /// The service's name.
    pub name: &'a str,
    /// The services that must be running before this one starts. A name may repeat, and may
    /// name a service that is not in the graph; neither is an error here.
    pub depends_on: Vec<&'a str>,
}

/// A dependency cycle: the services on it, each depending on the next and the last on the
/// first, so `["a", "b", "c"]` means a -> b -> c -> a.
///
/// The cycle starts at its alphabetically first member, so one cycle is always reported the
/// same way, whichever member it was found from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cycle(pub Vec<String>);

impl fmt::Display for Cycle {
    /// Writes the cycle closed, as `a -> b -> c -> a`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for name in &self.0 {
            write!(f, "{name} -> ")?;
        }
        match self.0.first() {
            Some(first) => f.write_str(first),
            None => Ok(()),
        }
    }
}

/// Splits `nodes` into waves for starting them: wave 0 holds the services with no dependency
/// among `nodes`, and wave k those whose dependencies all lie in earlier waves, each service in
/// the earliest wave possible (one past its longest chain of dependencies). Names within a
/// wave are sorted.
///
/// Dependencies on names not in `nodes` are ignored: the caller checks them separately. A
/// service declared twice is one service, depending on the union of both lists.
///
/// Fails with the cycle found first by a depth-first search that visits services, and each
/// one's dependencies, in alphabetical order.
pub(crate) fn start_waves(nodes: &[Node<'_>]) -> Result<Vec<Vec<String>>, Cycle> {
    let graph = Graph::new(nodes);
    let levels = graph.levels().map_err(|cycle| graph.cycle(&cycle))?;
    let mut waves: Vec<Vec<String>> = Vec::new();
    // Indices are in alphabetical order, so pushing them in order keeps every wave sorted.
    for (name, &level) in graph.names.iter().zip(&levels) {
        if waves.len() <= level {
            waves.resize_with(level + 1, Vec::new);
        }
        waves[level].push((*name).to_owned());
    }
    Ok(waves)
}

/// The waves to stop `nodes` in: those of [`start_waves`] in reverse, so that every service
/// stops before the services it depends on.
pub(crate) fn stop_waves(nodes: &[Node<'_>]) -> Result<Vec<Vec<String>>, Cycle> {
    let mut waves = start_waves(nodes)?;
    waves.reverse();
    Ok(waves)
}

/// Finds a cycle through the dependency edges of `nodes`, if there is one: the same cycle that
/// [`start_waves`] would fail with.
pub(crate) fn find_cycle(nodes: &[Node<'_>]) -> Option<Cycle> {
    let graph = Graph::new(nodes);
    graph.levels().err().map(|cycle| graph.cycle(&cycle))
}

/// The services among `nodes` that depend on `target`, directly or through others, sorted.
/// Used to stop a service's dependents before it.
///
/// `target` itself is never in the list, even when it lies on a cycle; it need not be one of
/// `nodes`, so that the dependents of a service that has gone can still be found.
pub(crate) fn dependents_of(nodes: &[Node<'_>], target: &str) -> Vec<String> {
    let mut dependents: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for node in nodes {
        for &dependency in &node.depends_on {
            dependents.entry(dependency).or_default().insert(node.name);
        }
    }
    let mut found: BTreeSet<&str> = BTreeSet::new();
    let mut to_visit = vec![target];
    while let Some(name) = to_visit.pop() {
        for &dependent in dependents.get(name).into_iter().flatten() {
            if dependent != target && found.insert(dependent) {
                to_visit.push(dependent);
            }
        }
    }
    found.into_iter().map(str::to_owned).collect()
}

/// `targets` and every service among `nodes` they depend on, directly or through others,
/// sorted and without repeats. Used to start a service together with its dependencies.
///
/// Every target is in the list, even one that is not among `nodes`: the caller decides what
/// an unknown target means. Dependencies on names not in `nodes` are left out.
pub(crate) fn with_dependencies(nodes: &[Node<'_>], targets: &[&str]) -> Vec<String> {
    let graph = Graph::new(nodes);
    let mut found: BTreeSet<&str> = targets.iter().copied().collect();
    let mut to_visit: Vec<usize> = targets.iter().filter_map(|name| graph.index(name)).collect();
    while let Some(service) = to_visit.pop() {
        for &dependency in &graph.deps[service] {
            if found.insert(graph.names[dependency]) {
                to_visit.push(dependency);
            }
        }
    }
    found.into_iter().map(str::to_owned).collect()
}

/// The services of a `&[Node]`, numbered, with their dependencies resolved to numbers.
struct Graph<'a> {
    /// Every service name, sorted and without repeats. A service is known by its index here,
    /// so index order is alphabetical order.
    names: Vec<&'a str>,
    /// `deps[i]`: the services `names[i]` depends on that are in the graph, sorted and
    /// without repeats.
    deps: Vec<Vec<usize>>,
}

/// Where a service stands in the depth-first search of [`Graph::levels`].
#[derive(Clone, Copy)]
enum Mark {
    /// Not reached yet.
    New,
    /// On the search path, at this depth: reaching it again closes a cycle.
    Open(usize),
    /// Left, with its level known.
    Done,
}

impl<'a> Graph<'a> {
    fn new(nodes: &[Node<'a>]) -> Self {
        let mut edges: BTreeMap<&'a str, BTreeSet<&'a str>> = BTreeMap::new();
        for node in nodes {
            edges.entry(node.name).or_default().extend(node.depends_on.iter().copied());
        }
        let names: Vec<&'a str> = edges.keys().copied().collect();
        // Both the map and each set iterate in name order, so every `deps[i]` comes out sorted.
        let deps = edges
            .values()
            .map(|depends_on| {
                depends_on.iter().filter_map(|name| names.binary_search(name).ok()).collect()
            })
            .collect();
        Graph { names, deps }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.names.binary_search(&name).ok()
    }

    /// Each service's level (0 without dependencies, else one more than its deepest
    /// dependency's), or the services on a cycle in dependency order.
    ///
    /// One depth-first search does both, so there is no state in which neither a level nor a
    /// cycle is known. It starts from services, and follows dependencies, in index order, which
    /// makes the cycle it finds deterministic. The search keeps its own stack: a long chain of
    /// services must not overflow the thread's.
    fn levels(&self) -> Result<Vec<usize>, Vec<usize>> {
        let mut marks = vec![Mark::New; self.names.len()];
        let mut levels = vec![0; self.names.len()];
        for root in 0..self.names.len() {
            if !matches!(marks[root], Mark::New) {
                continue;
            }
            // The search path: each service with the position of the next dependency to visit.
            let mut path: Vec<(usize, usize)> = vec![(root, 0)];
            marks[root] = Mark::Open(0);
            while let Some((service, next)) = path.last_mut() {
                let service = *service;
                match self.deps[service].get(*next) {
                    Some(&dependency) => {
                        *next += 1;
                        match marks[dependency] {
                            Mark::New => {
                                marks[dependency] = Mark::Open(path.len());
                                path.push((dependency, 0));
                            }
                            // The path from `dependency` down to `service`, which depends on
                            // `dependency` again: each member depends on the next.
                            Mark::Open(depth) => {
                                return Err(path[depth..].iter().map(|&(s, _)| s).collect());
                            }
                            Mark::Done => {}
                        }
                    }
                    None => {
                        // Every dependency is done, so its level is final.
                        levels[service] = self.deps[service]
                            .iter()
                            .map(|&dependency| levels[dependency] + 1)
                            .max()
                            .unwrap_or(0);
                        marks[service] = Mark::Done;
                        path.pop();
                    }
                }
            }
        }
        Ok(levels)
    }

    /// The services on `cycle` by name, starting from the alphabetically first (the lowest
    /// index), so the report does not depend on where the search entered the cycle.
    fn cycle(&self, cycle: &[usize]) -> Cycle {
        let start =
            cycle.iter().enumerate().min_by_key(|&(_, &service)| service).map_or(0, |m| m.0);
        let (head, tail) = cycle.split_at(start);
        Cycle(tail.iter().chain(head).map(|&service| self.names[service].to_owned()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::Rng;

    fn node<'a>(name: &'a str, depends_on: &[&'a str]) -> Node<'a> {
        Node { name, depends_on: depends_on.to_vec() }
    }

    fn waves(expected: &[&[&str]]) -> Vec<Vec<String>> {
        expected.iter().map(|wave| wave.iter().map(|&s| s.to_owned()).collect()).collect()
    }

    fn names(expected: &[&str]) -> Vec<String> {
        expected.iter().map(|&s| s.to_owned()).collect()
    }

    fn cycle(expected: &[&str]) -> Cycle {
        Cycle(names(expected))
    }

    /// The wave each service sits in.
    fn wave_of(waves: &[Vec<String>]) -> BTreeMap<String, usize> {
        let mut found = BTreeMap::new();
        for (level, wave) in waves.iter().enumerate() {
            for name in wave {
                assert!(found.insert(name.clone(), level).is_none(), "{name} placed twice");
            }
        }
        found
    }

    #[test]
    fn no_services_means_no_waves() {
        assert_eq!(start_waves(&[]), Ok(vec![]));
        assert_eq!(stop_waves(&[]), Ok(vec![]));
        assert_eq!(find_cycle(&[]), None);
    }

    #[test]
    fn independent_services_start_together_in_name_order() {
        let nodes = [node("web", &[]), node("db", &[]), node("cache", &[])];
        assert_eq!(start_waves(&nodes), Ok(waves(&[&["cache", "db", "web"]])));
    }

    #[test]
    fn a_diamond_starts_its_base_first_and_its_top_last() {
        let nodes = [
            node("top", &["left", "right"]),
            node("right", &["base"]),
            node("left", &["base"]),
            node("base", &[]),
        ];
        let start = waves(&[&["base"], &["left", "right"], &["top"]]);
        assert_eq!(start_waves(&nodes), Ok(start));
        let stop = waves(&[&["top"], &["left", "right"], &["base"]]);
        assert_eq!(stop_waves(&nodes), Ok(stop));
        assert_eq!(find_cycle(&nodes), None);
    }

    #[test]
    fn five_levels_place_each_service_in_its_earliest_wave() {
        let nodes = [
            node("api", &["auth", "store", "config"]),
            node("auth", &["store"]),
            node("cache", &["config"]),
            node("config", &[]),
            node("db", &[]),
            node("gateway", &["api", "db"]),
            node("metrics", &[]),
            node("store", &["db", "cache"]),
        ];
        let expected = waves(&[
            &["config", "db", "metrics"],
            &["cache"],
            &["store"],
            &["auth"],
            &["api"],
            &["gateway"],
        ]);
        let start = start_waves(&nodes).unwrap();
        assert_eq!(start, expected);

        let wave = wave_of(&start);
        for service in &nodes {
            let deepest = service.depends_on.iter().map(|&d| wave[d]).max();
            for &dependency in &service.depends_on {
                assert!(wave[dependency] < wave[service.name], "{} -> {dependency}", service.name);
            }
            // Earliest possible: right after its latest dependency, or first if it has none.
            assert_eq!(wave[service.name], deepest.map_or(0, |d| d + 1), "{}", service.name);
        }
    }

    #[test]
    fn a_service_depending_on_itself_is_a_cycle_of_one() {
        let nodes = [node("a", &[]), node("loop", &["a", "loop"])];
        assert_eq!(find_cycle(&nodes), Some(cycle(&["loop"])));
        assert_eq!(start_waves(&nodes), Err(cycle(&["loop"])));
        assert_eq!(stop_waves(&nodes), Err(cycle(&["loop"])));
    }

    #[test]
    fn two_services_depending_on_each_other_are_a_cycle() {
        let nodes = [node("b", &["a"]), node("a", &["b"])];
        assert_eq!(start_waves(&nodes), Err(cycle(&["a", "b"])));
    }

    #[test]
    fn a_three_cycle_names_its_members_in_dependency_order() {
        let forward = [node("a", &["b"]), node("b", &["c"]), node("c", &["a"])];
        assert_eq!(find_cycle(&forward), Some(cycle(&["a", "b", "c"])));
        assert_eq!(cycle(&["a", "b", "c"]).to_string(), "a -> b -> c -> a");

        let backward = [node("a", &["c"]), node("c", &["b"]), node("b", &["a"])];
        assert_eq!(find_cycle(&backward), Some(cycle(&["a", "c", "b"])));
    }

    #[test]
    fn a_cycle_not_reachable_from_the_first_service_is_found() {
        let nodes = [
            node("alpha", &[]),
            node("beta", &["alpha"]),
            node("x", &["y", "alpha"]),
            node("y", &["z"]),
            node("z", &["x"]),
        ];
        assert_eq!(find_cycle(&nodes), Some(cycle(&["x", "y", "z"])));
        assert_eq!(start_waves(&nodes), Err(cycle(&["x", "y", "z"])));
    }

    #[test]
    fn a_cycle_entered_from_outside_leaves_the_way_in_out_of_the_report() {
        // "a" is searched first and leads into the cycle at "n", not at its first member "m".
        let nodes = [node("a", &["n"]), node("m", &["n"]), node("n", &["o"]), node("o", &["m"])];
        assert_eq!(find_cycle(&nodes), Some(cycle(&["m", "n", "o"])));
    }

    #[test]
    fn the_same_cycle_is_reported_whatever_the_declaration_order() {
        let mut nodes =
            vec![node("a", &["b"]), node("b", &["c"]), node("c", &["a"]), node("d", &["c"])];
        let mut rng = Rng(10);
        for _ in 0..20 {
            rng.shuffle(&mut nodes);
            assert_eq!(find_cycle(&nodes), Some(cycle(&["a", "b", "c"])));
        }
    }

    #[test]
    fn unknown_dependencies_are_ignored() {
        let nodes = [node("app", &["ghost", "db"]), node("db", &["phantom"])];
        assert_eq!(start_waves(&nodes), Ok(waves(&[&["db"], &["app"]])));
        assert_eq!(find_cycle(&nodes), None);
        assert_eq!(with_dependencies(&nodes, &["app"]), names(&["app", "db"]));
    }

    #[test]
    fn a_service_declared_twice_depends_on_both_lists() {
        let nodes = [
            node("app", &["db"]),
            node("db", &[]),
            node("app", &["cache", "db"]),
            node("cache", &[]),
        ];
        assert_eq!(start_waves(&nodes), Ok(waves(&[&["cache", "db"], &["app"]])));
    }

    #[test]
    fn dependents_are_everything_above_a_service() {
        let nodes = [
            node("top", &["left", "right"]),
            node("right", &["base"]),
            node("left", &["base"]),
            node("base", &[]),
            node("other", &[]),
        ];
        assert_eq!(dependents_of(&nodes, "base"), names(&["left", "right", "top"]));
        assert_eq!(dependents_of(&nodes, "left"), names(&["top"]));
        assert_eq!(dependents_of(&nodes, "top"), names(&[]));
        assert_eq!(dependents_of(&nodes, "nobody"), names(&[]));
    }

    #[test]
    fn dependents_exclude_the_target_even_on_a_cycle_and_follow_unknown_names() {
        let nodes = [node("a", &["b"]), node("b", &["a"]), node("c", &["a"])];
        assert_eq!(dependents_of(&nodes, "a"), names(&["b", "c"]));

        let orphans = [node("app", &["gone"]), node("ui", &["app"])];
        assert_eq!(dependents_of(&orphans, "gone"), names(&["app", "ui"]));
    }

    #[test]
    fn with_dependencies_adds_everything_below_the_targets() {
        let nodes = [
            node("top", &["left", "right"]),
            node("right", &["base"]),
            node("left", &["base"]),
            node("base", &[]),
            node("other", &[]),
        ];
        assert_eq!(with_dependencies(&nodes, &["left"]), names(&["base", "left"]));
        assert_eq!(with_dependencies(&nodes, &["top"]), names(&["base", "left", "right", "top"]));
        assert_eq!(
            with_dependencies(&nodes, &["left", "other", "left", "unknown"]),
            names(&["base", "left", "other", "unknown"])
        );
        assert_eq!(with_dependencies(&nodes, &[]), names(&[]));
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let names: Vec<String> = (0..100_000).map(|i| format!("s{i:06}")).collect();
        let nodes: Vec<Node<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Node {
                name,
                depends_on: names.get(i + 1).map(String::as_str).into_iter().collect(),
            })
            .collect();
        let start = start_waves(&nodes).unwrap();
        assert_eq!(start.len(), 100_000);
        assert_eq!(start[0], vec!["s099999".to_owned()]);
    }

    // ----- property tests -----

    /// A random graph over `n` services whose names are shuffled against their indices, so that
    /// alphabetical order tells nothing about the edges. `deps[i]` holds indices.
    struct RandomGraph {
        names: Vec<String>,
        deps: Vec<Vec<usize>>,
    }

    impl RandomGraph {
        /// A DAG: service `i` depends only on services with a lower index.
        fn acyclic(rng: &mut Rng) -> Self {
            let n = 1 + rng.index(12);
            let density = rng.below(60);
            let mut labels: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut labels);
            let names = labels.iter().map(|label| format!("s{label:02}")).collect();
            let deps = (0..n).map(|i| (0..i).filter(|_| rng.chance(density)).collect()).collect();
            RandomGraph { names, deps }
        }

        fn nodes(&self, rng: &mut Rng) -> Vec<Node<'_>> {
            let mut nodes: Vec<Node<'_>> = self
                .names
                .iter()
                .zip(&self.deps)
                .map(|(name, deps)| Node {
                    name,
                    depends_on: deps.iter().map(|&d| self.names[d].as_str()).collect(),
                })
                .collect();
            rng.shuffle(&mut nodes);
            nodes
        }

        /// `reach[i][j]`: whether `i` depends on `j` through one or more edges (Floyd-Warshall).
        fn reach(&self) -> Vec<Vec<bool>> {
            let n = self.names.len();
            let mut reach = vec![vec![false; n]; n];
            for (i, deps) in self.deps.iter().enumerate() {
                for &d in deps {
                    reach[i][d] = true;
                }
            }
            for k in 0..n {
                for i in 0..n {
                    for j in 0..n {
                        reach[i][j] = reach[i][j] || (reach[i][k] && reach[k][j]);
                    }
                }
            }
            reach
        }

        fn has_edge(&self, from: &str, to: &str) -> bool {
            let from = self.names.iter().position(|n| n == from).unwrap();
            self.deps[from].iter().any(|&d| self.names[d] == to)
        }
    }

    /// The level as defined: 0 without dependencies, else one more than the deepest one's.
    fn naive_level(graph: &RandomGraph, service: usize) -> usize {
        graph.deps[service].iter().map(|&d| naive_level(graph, d) + 1).max().unwrap_or(0)
    }

    #[test]
    fn random_dags_start_in_the_waves_the_naive_model_gives() {
        let mut rng = Rng(11);
        for round in 0..2000 {
            let graph = RandomGraph::acyclic(&mut rng);
            let nodes = graph.nodes(&mut rng);
            let start = start_waves(&nodes).unwrap_or_else(|c| panic!("round {round}: {c}"));

            let mut expected: Vec<Vec<String>> = Vec::new();
            let mut by_level: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for (i, name) in graph.names.iter().enumerate() {
                by_level.entry(naive_level(&graph, i)).or_default().push(name.clone());
            }
            for (level, mut wave) in by_level {
                assert_eq!(level, expected.len(), "round {round}: levels have no gaps");
                wave.sort();
                expected.push(wave);
            }
            assert_eq!(start, expected, "round {round}");

            let wave = wave_of(&start);
            for (i, deps) in graph.deps.iter().enumerate() {
                for &d in deps {
                    assert!(wave[&graph.names[d]] < wave[&graph.names[i]], "round {round}");
                }
            }
            let mut stop = start.clone();
            stop.reverse();
            assert_eq!(stop_waves(&nodes), Ok(stop));
            assert_eq!(find_cycle(&nodes), None);

            // The same answer whatever the declaration order.
            assert_eq!(start_waves(&graph.nodes(&mut rng)), Ok(start));
        }
    }

    #[test]
    fn random_closures_match_reachability() {
        let mut rng = Rng(12);
        for round in 0..1000 {
            let graph = RandomGraph::acyclic(&mut rng);
            let nodes = graph.nodes(&mut rng);
            let reach = graph.reach();
            let n = graph.names.len();
            for (target, target_name) in graph.names.iter().enumerate() {
                let mut dependents: Vec<String> =
                    (0..n).filter(|&i| reach[i][target]).map(|i| graph.names[i].clone()).collect();
                dependents.sort();
                assert_eq!(dependents_of(&nodes, target_name), dependents, "round {round}");

                let mut below: Vec<String> = (0..n)
                    .filter(|&j| j == target || reach[target][j])
                    .map(|j| graph.names[j].clone())
                    .collect();
                below.sort();
                assert_eq!(with_dependencies(&nodes, &[target_name]), below, "round {round}");
            }
        }
    }

    /// Checks that `cycle` is a real cycle of `graph`: distinct members, each depending on the
    /// next and the last on the first, starting from the alphabetically first.
    fn assert_real_cycle(graph: &RandomGraph, cycle: &Cycle, round: usize) {
        let members = &cycle.0;
        assert!(!members.is_empty(), "round {round}");
        let distinct: BTreeSet<&String> = members.iter().collect();
        assert_eq!(distinct.len(), members.len(), "round {round}: {cycle}");
        assert_eq!(Some(&members[0]), distinct.first().copied(), "round {round}: {cycle}");
        for (i, from) in members.iter().enumerate() {
            let to = &members[(i + 1) % members.len()];
            assert!(graph.has_edge(from, to), "round {round}: {from} -> {to} in {cycle}");
        }
    }

    #[test]
    fn random_dags_with_a_back_edge_always_report_a_real_cycle() {
        let mut rng = Rng(13);
        for round in 0..2000 {
            let mut graph = RandomGraph::acyclic(&mut rng);
            let n = graph.names.len();
            // A back edge from `low` to `high` where `high` depends on `low`, through the DAG's
            // edges or through one added for the purpose; `low == high` is a self-loop.
            let high = rng.index(n);
            let low = rng.index(high + 1);
            if low < high && !graph.reach()[high][low] {
                graph.deps[high].push(low);
            }
            graph.deps[low].push(high);

            let nodes = graph.nodes(&mut rng);
            let found = find_cycle(&nodes).unwrap_or_else(|| panic!("round {round}: no cycle"));
            assert_real_cycle(&graph, &found, round);
            assert_eq!(start_waves(&nodes), Err(found.clone()), "round {round}");
            assert_eq!(find_cycle(&graph.nodes(&mut rng)), Some(found), "round {round}");
        }
    }

    #[test]
    fn random_graphs_have_a_cycle_exactly_when_a_service_depends_on_itself() {
        let mut rng = Rng(14);
        let mut cyclic = 0;
        for round in 0..3000 {
            let n = 1 + rng.index(10);
            let density = rng.below(25);
            let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
            let deps = (0..n).map(|_| (0..n).filter(|_| rng.chance(density)).collect()).collect();
            let graph = RandomGraph { names, deps };
            let nodes = graph.nodes(&mut rng);
            let reach = graph.reach();
            match find_cycle(&nodes) {
                Some(found) => {
                    cyclic += 1;
                    assert!((0..n).any(|i| reach[i][i]), "round {round}: {found}");
                    assert_real_cycle(&graph, &found, round);
                }
                None => {
                    assert!((0..n).all(|i| !reach[i][i]), "round {round}: cycle missed");
                    let start = start_waves(&nodes).unwrap();
                    let wave = wave_of(&start);
                    assert_eq!(wave.len(), n, "round {round}: every service placed");
                }
            }
        }
        // Guards the generator: both outcomes must be exercised.
        assert!(cyclic > 300 && cyclic < 2700, "{cyclic} cyclic graphs of 3000");
    }
}
