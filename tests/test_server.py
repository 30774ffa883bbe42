"""start_server's JVM flags (NOTE [ Soft references ] in dh_tf/server.py)."""

from __future__ import annotations

from dh_tf.server import STREAMING_JVM_ARGS, _defaults_not_in


def test_the_running_server_has_the_streaming_flags(server):
    import jpy

    arguments = list(jpy.get_type("java.lang.management.ManagementFactory").getRuntimeMXBean().getInputArguments().toArray())
    assert "-XX:SoftRefLRUPolicyMSPerMB=0" in arguments and "-Xmx1g" in arguments


def test_user_flags_replace_a_default_of_the_same_option():
    assert _defaults_not_in([]) == list(STREAMING_JVM_ARGS)
    assert _defaults_not_in(["-XX:SoftRefLRUPolicyMSPerMB=1000", "-Dx=1"]) == []
    assert _defaults_not_in(["-XX:+UseG1GC"]) == ["-XX:SoftRefLRUPolicyMSPerMB=0"]
