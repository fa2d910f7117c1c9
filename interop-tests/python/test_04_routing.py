"""Tutorial 4: routing -- direct exchange, binding keys = log severities."""

from amqp_helpers import check_routing

SEVERITIES = ["info", "warning", "error"]


def test_direct_exchange_routes_by_severity():
    check_routing(
        "direct", "direct_logs",
        bindings={
            "errors_to_disk": ["error"],
            "all_to_screen": ["info", "warning", "error"],
            "warnings": ["warning"],
            # binding the same key twice is idempotent: still one copy
            "dup_binding": ["info", "info"],
        },
        published=["info", "error", "warning", "debug", "error", "info",
                   "critical", "warning", "error", "Error", "info.x", ""],
        expected={
            "errors_to_disk": ["error"],
            "all_to_screen": ["info", "warning", "error"],
            "warnings": ["warning"],
            "dup_binding": ["info"],
        })


def test_direct_exchange_multiple_bindings_same_key():
    """Several queues bound with the same key all get the message (acts like
    fanout for that key); unbound keys are dropped."""
    check_routing(
        "direct", "direct_multi",
        bindings={"q1": ["black"], "q2": ["black", "green"], "q3": ["orange"]},
        published=["black", "green", "orange", "black", "blue"],
        expected={"q1": ["black"], "q2": ["black", "green"], "q3": ["orange"]})
