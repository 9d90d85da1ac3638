"""graph.py: unknown dependencies, cycles as paths, start layers, stop order, reachability."""

from __future__ import annotations

import pytest

from entrypoint.config import graph
from entrypoint.errors import Problem
from entrypoint.config.spec import ServiceSpec


def spec(name: str, *deps: str, enabled: bool = True) -> ServiceSpec:
    return ServiceSpec(name=name, argv=("/bin/true",), enabled=enabled,
                       depends_on=tuple((d, "started") for d in deps))


def rendered(problems: list[Problem]) -> list[str]:
    return [p.render() for p in problems]


# ---------------------------------------------------------------- problems()

def test_no_problems_for_a_valid_graph():
    assert graph.problems([(0, "db", []), (1, "app", ["db"]), (2, "web", ["app", "db"])]) == []


def test_unknown_dependency_with_suggestion_matches_the_contract_example():
    found = graph.problems([(0, "nginx", []), (1, "db", []), (2, "app", ["ngnix"])])
    assert found == [Problem('services[2] "app": depends_on', 'unknown service "ngnix"',
                             'did you mean "nginx"?')]
    assert found[0].render() == 'services[2] "app": depends_on: unknown service "ngnix" (did you mean "nginx"?)'


def test_unknown_dependency_without_close_match_lists_known_services():
    [p] = graph.problems([(0, "db", []), (1, "app", ["zzzz"])])
    assert p.message == 'unknown service "zzzz"'
    assert p.hint == "known services: db, app"


def test_self_dependency():
    assert rendered(graph.problems([(0, "app", ["app"])])) == [
        'services[0] "app": depends_on: "app" depends on itself (remove it from depends_on)']


def test_two_cycle_is_a_path_reported_once():
    found = graph.problems([(0, "a", ["b"]), (1, "b", ["a"])])
    assert rendered(found) == [
        'services[0] "a": depends_on: dependency cycle: a -> b -> a (remove one of these dependencies)']


def test_three_cycle_starts_at_its_first_service_in_config_order():
    found = graph.problems([(0, "x", []), (1, "c", ["a"]), (2, "a", ["b"]), (3, "b", ["c"])])
    assert [p.message for p in found] == ["dependency cycle: c -> a -> b -> c"]
    assert found[0].where == 'services[1] "c": depends_on'


def test_every_distinct_cycle_is_reported():
    # a -> b -> a and a -> c -> a share "a"; d -> e -> d is separate.
    found = graph.problems([(0, "a", ["b", "c"]), (1, "b", ["a"]), (2, "c", ["a"]),
                            (3, "d", ["e"]), (4, "e", ["d"])])
    assert sorted(p.message for p in found) == [
        "dependency cycle: a -> b -> a",
        "dependency cycle: a -> c -> a",
        "dependency cycle: d -> e -> d",
    ]


def test_a_cycle_behind_a_chain_is_found_and_the_chain_is_not_in_it():
    found = graph.problems([(0, "top", ["mid"]), (1, "mid", ["x"]), (2, "x", ["y"]), (3, "y", ["x"])])
    assert [p.message for p in found] == ["dependency cycle: x -> y -> x"]


def test_unknown_self_and_cycle_all_at_once():
    found = graph.problems([(0, "a", ["a", "b", "nope"]), (1, "b", ["a"])])
    assert [p.message for p in found] == [
        '"a" depends on itself', 'unknown service "nope"', "dependency cycle: a -> b -> a"]


def test_indexes_are_kept_when_some_services_are_missing():
    # config.py leaves out services it could not read at all; the indexes stay the config's.
    [p] = graph.problems([(0, "db", []), (3, "app", ["dbb"])])
    assert p.where == 'services[3] "app": depends_on'
    assert p.hint == 'did you mean "db"?'


def test_duplicate_dependency_reported_once():
    assert len(graph.problems([(0, "a", ["zz", "zz"])])) == 1


def test_cycle_count_is_bounded_in_a_dense_graph():
    names = [f"s{i}" for i in range(12)]
    services = [(i, n, [m for m in names if m != n]) for i, n in enumerate(names)]
    found = graph.problems(services)
    assert 0 < len(found) <= graph.MAX_CYCLES


def test_a_long_chain_does_not_hit_the_recursion_limit():
    n = 5000
    services = [(i, f"s{i}", [f"s{i + 1}"] if i + 1 < n else ["s0"]) for i in range(n)]
    [p] = graph.problems(services)
    assert p.message.startswith("dependency cycle: s0 -> s1 -> s2")
    assert p.message.endswith(f"s{n - 1} -> s0")


# ---------------------------------------------------------------- cycles()

def test_cycles_directly():
    assert graph.cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == [["a", "b", "c"]]
    assert graph.cycles({"a": ["b"], "b": []}) == []


# ---------------------------------------------------------------- layers and order

def test_start_layers_keep_config_order_within_a_layer():
    specs = [spec("web", "app"), spec("cache"), spec("app", "db", "cache"), spec("db")]
    assert graph.start_layers(specs) == [["cache", "db"], ["app"], ["web"]]


def test_start_layers_independent_services_share_the_first_layer():
    assert graph.start_layers([spec("a"), spec("b"), spec("c")]) == [["a", "b", "c"]]


def test_start_layers_diamond():
    specs = [spec("top", "left", "right"), spec("left", "base"), spec("right", "base"), spec("base")]
    assert graph.start_layers(specs) == [["base"], ["left", "right"], ["top"]]


def test_start_layers_skip_disabled_services():
    specs = [spec("a"), spec("b", "a", enabled=False), spec("c", "a")]
    assert graph.start_layers(specs) == [["a"], ["c"]]


def test_start_layers_empty():
    assert graph.start_layers([]) == []
    assert graph.stop_order([]) == []


def test_start_layers_raise_on_a_cycle():
    with pytest.raises(ValueError, match="cycle"):
        graph.start_layers([spec("a", "b"), spec("b", "a")])


def test_stop_order_is_the_reverse_of_start_layers():
    specs = [spec("db"), spec("app", "db"), spec("web", "app"), spec("cron")]
    assert graph.start_layers(specs) == [["db", "cron"], ["app"], ["web"]]
    assert graph.stop_order(specs) == [["web"], ["app"], ["db", "cron"]]


def test_dependencies_and_dependents_are_transitive():
    specs = [spec("db"), spec("cache"), spec("app", "db", "cache"), spec("web", "app"), spec("other")]
    assert graph.dependencies(specs, "web") == {"app", "db", "cache"}
    assert graph.dependencies(specs, "db") == set()
    assert graph.dependents(specs, "db") == {"app", "web"}
    assert graph.dependents(specs, "web") == set()
    assert graph.dependents(specs, "unknown") == set()


def test_reachability_terminates_on_cycles_and_excludes_the_service_itself():
    specs = [spec("a", "b"), spec("b", "a")]
    assert graph.dependents(specs, "a") == {"b"}
    assert graph.dependencies(specs, "a") == {"b"}


def test_did_you_mean():
    assert graph.did_you_mean("ngnix", ["nginx", "redis"]) == 'did you mean "nginx"?'
    assert graph.did_you_mean("zzz", ["nginx"]) == ""
