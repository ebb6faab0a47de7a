"""Tool calls of an answer as the event keeps them (serving/chat.py): from a plain answer's
message, and put together from stream deltas; clipped to the event's bounds, so an answer's
event can always be made."""
from schemas.events import MAX_TOOL_CALLS, MAX_TOOL_NAME_CHARS
from serving.chat import StreamedToolCalls, tool_calls


def test_a_plain_answers_tool_calls():
    raw = [{"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lima"}'}},
           {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]
    got = [c.model_dump() for c in tool_calls(raw)]
    assert got == [{"id": "call_a", "name": "get_weather", "arguments": '{"city": "Lima"}'},
                   {"id": "call_b", "name": "get_time", "arguments": "{}"}]
    assert tool_calls(None) == [] and tool_calls([]) == []


def test_stream_deltas_make_whole_calls_in_index_order():
    acc = StreamedToolCalls()
    acc.add([{"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}])
    acc.add([{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"ci'}}])
    acc.add([{"index": 0, "function": {"arguments": 'ty": "Li'}}, {"index": 1, "function": {"arguments": "{}"}}])
    acc.add([{"index": 0, "function": {"arguments": 'ma"}'}}])
    assert [c.model_dump() for c in acc.done()] == [
        {"id": "call_a", "name": "get_weather", "arguments": '{"city": "Lima"}'},
        {"id": "call_b", "name": "get_time", "arguments": "{}"}]


def test_what_the_model_writes_is_clipped_to_the_events_bounds():
    long = [{"id": "x" * 1000, "function": {"name": "n" * 500, "arguments": "a"}}] * (MAX_TOOL_CALLS + 5)
    got = tool_calls(long)
    assert len(got) == MAX_TOOL_CALLS and len(got[0].name) == MAX_TOOL_NAME_CHARS
    acc = StreamedToolCalls()
    acc.add([{"index": i, "function": {"name": "f"}} for i in range(MAX_TOOL_CALLS + 5)])
    assert len(acc.done()) == MAX_TOOL_CALLS
    assert tool_calls([{"function": {}}])[0].model_dump() == {"id": None, "name": "", "arguments": ""}
