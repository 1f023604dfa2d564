"""The demo agent: a support agent with two tools (one backed by a retriever),
driven by a scripted fake chat model, so that it runs offline, without an API
key, and the same way every time.

No fake chat model implements `bind_tools`; as LangChain's maintainers advise
(langchain#32275), `ScriptedChatModel` subclasses `GenericFakeChatModel` with a
`bind_tools` that returns the model itself, and scripts `AIMessage`s carrying
`tool_calls`. The `langchain` package (`create_agent`) is not a dependency: the
agent is the usual tool loop, written with langchain-core alone, as one root
runnable (`support_agent`) that reports its actions and its finish to the
callbacks like LangChain's agents do. It runs the same sync (`run_agent`) and
async (`run_agent_async`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.agents import AgentActionMessageLog, AgentFinish
from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    BaseCallbackHandler,
    CallbackManagerForChainRun,
    CallbackManagerForRetrieverRun,
    adispatch_custom_event,
    dispatch_custom_event,
)
from langchain_core.documents import Document
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.tools import BaseTool, StructuredTool, tool

SYSTEM = "You are the support agent of a small web shop. Use the tools; answer briefly."
QUESTION = "Where is my order A-1042, and can I get a refund for the delay?"
MAX_STEPS = 5

ORDERS: dict[str, dict[str, Any]] = {
    "A-1042": {
        "status": "in transit",
        "carrier": "SwissPost",
        "shipped": "2026-01-12",
        "promised": "2026-01-14",
        "days_late": 3,
    },
}

POLICIES = [
    Document(
        id="refunds",
        page_content="Late delivery: when a parcel arrives more than 2 days after the promised "
        "date, the customer may ask for a refund of the shipping fee (CHF 7.90).",
        metadata={"source": "policies/refunds.md"},
    ),
    Document(
        id="returns",
        page_content="Returns: items may be returned within 30 days of delivery, unused.",
        metadata={"source": "policies/returns.md"},
    ),
    Document(
        id="privacy",
        page_content="Privacy: order data is kept 10 years for accounting.",
        metadata={"source": "policies/privacy.md"},
    ),
]


class ScriptedChatModel(GenericFakeChatModel):
    """`GenericFakeChatModel` whose `bind_tools` returns itself: the tool calls
    are in the scripted `AIMessage`s."""

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self


def script() -> list[AIMessage]:
    """What the model answers, turn by turn."""
    return [
        AIMessage(
            content="",
            tool_calls=[
                {"name": "get_order_status", "args": {"order_id": "A-1042"}, "id": "call_order_1"}
            ],
        ),
        AIMessage(
            content="",
            tool_calls=[
                {
                    "name": "search_policy",
                    "args": {"query": "refund for a late delivery"},
                    "id": "call_policy_2",
                }
            ],
        ),
        AIMessage(
            content="Order A-1042 is in transit with SwissPost, 3 days past the promised date. "
            "Because it is more than 2 days late, you can get the shipping fee (CHF 7.90) "
            "refunded.",
            usage_metadata={"input_tokens": 412, "output_tokens": 41, "total_tokens": 453},
        ),
    ]


class KeywordRetriever(BaseRetriever):
    """The documents sharing the most words with the query."""

    documents: list[Document]
    k: int = 1

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        words = set(re.findall(r"\w+", query.lower()))
        scored = [
            (len(words & set(re.findall(r"\w+", d.page_content.lower()))), -i, d)
            for i, d in enumerate(self.documents)
        ]
        scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
        return [d for score, _, d in scored[: self.k] if score > 0]


RETRIEVER = KeywordRetriever(documents=POLICIES)


@tool
def get_order_status(order_id: str) -> str:
    """Look up the shipping status of an order by its id."""
    return json.dumps(ORDERS.get(order_id, {"error": f"no order {order_id}"}), sort_keys=True)


def _found(docs: list[Document]) -> str:
    return "\n".join(f"[{d.metadata['source']}] {d.page_content}" for d in docs) or "nothing found"


# The retriever runs inside the tool's run (LangChain sets the tool's config as
# the current one), so its events name the tool run as their parent.
def _search_policy(query: str) -> str:
    return _found(RETRIEVER.invoke(query))


async def _asearch_policy(query: str) -> str:
    return _found(await RETRIEVER.ainvoke(query))


search_policy = StructuredTool.from_function(
    func=_search_policy,
    coroutine=_asearch_policy,
    name="search_policy",
    description="Search the shop's policies (refunds, returns, privacy).",
)

TOOLS: list[BaseTool] = [get_order_status, search_policy]
TOOLS_BY_NAME = {t.name: t for t in TOOLS}


class ToolCallAction(AgentActionMessageLog):
    """An agent's action, with the id of the model's tool call it carries out."""

    tool_call_id: str


def _plan() -> dict[str, Any]:
    return {"tools": sorted(TOOLS_BY_NAME), "max_steps": MAX_STEPS}


def _action(ai: AIMessage, call: Any) -> ToolCallAction:
    return ToolCallAction(
        tool=call["name"],
        tool_input=call["args"],
        log=f"calling {call['name']} for tool call {call['id']}",
        message_log=[ai],
        tool_call_id=call["id"],
    )


def _finish(answer: str) -> AgentFinish:
    return AgentFinish(return_values={"output": answer}, log=answer)


def _agent(question: str, run_manager: CallbackManagerForChainRun, config: RunnableConfig) -> str:
    model = ScriptedChatModel(messages=iter(script())).bind_tools(TOOLS)
    messages: list[BaseMessage] = [SystemMessage(SYSTEM), HumanMessage(question)]
    dispatch_custom_event("agent.plan", _plan(), config=config)
    for _ in range(MAX_STEPS):
        ai = model.invoke(messages, config)
        messages.append(ai)
        if not ai.tool_calls:
            run_manager.on_agent_finish(_finish(ai.text))
            return ai.text
        for call in ai.tool_calls:
            run_manager.on_agent_action(_action(ai, call))
            messages.append(TOOLS_BY_NAME[call["name"]].invoke(call, config))
    raise RuntimeError(f"no answer within {MAX_STEPS} steps")


async def _aagent(
    question: str, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
) -> str:
    model = ScriptedChatModel(messages=iter(script())).bind_tools(TOOLS)
    messages: list[BaseMessage] = [SystemMessage(SYSTEM), HumanMessage(question)]
    await adispatch_custom_event("agent.plan", _plan(), config=config)
    for _ in range(MAX_STEPS):
        ai = await model.ainvoke(messages, config)
        messages.append(ai)
        if not ai.tool_calls:
            await run_manager.on_agent_finish(_finish(ai.text))
            return ai.text
        for call in ai.tool_calls:
            await run_manager.on_agent_action(_action(ai, call))
            messages.append(await TOOLS_BY_NAME[call["name"]].ainvoke(call, config))
    raise RuntimeError(f"no answer within {MAX_STEPS} steps")


def build_agent() -> Runnable[str, str]:
    """The agent: one root runnable, sync and async."""
    return RunnableLambda(_agent, afunc=_aagent, name="support_agent")


def run_agent(callbacks: list[BaseCallbackHandler], question: str = QUESTION) -> str:
    return build_agent().invoke(question, {"callbacks": callbacks, "tags": ["demo"]})


async def run_agent_async(callbacks: list[BaseCallbackHandler], question: str = QUESTION) -> str:
    return await build_agent().ainvoke(question, {"callbacks": callbacks, "tags": ["demo"]})
