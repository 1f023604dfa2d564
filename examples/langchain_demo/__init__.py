"""A LangChain agent with tools, on a scripted fake chat model (offline, no API
key), recorded through `agent_chain.langchain.AgentChainCallbackHandler`.

    python -m examples.langchain_demo --url http://127.0.0.1:8000 --api-key csk_...

prints ``session_id=<uuid>`` once every event is acknowledged under a verified
seal (exit 0), or what is missing (exit 1).
"""

from .agent import QUESTION, build_agent, run_agent, run_agent_async

__all__ = ["QUESTION", "build_agent", "run_agent", "run_agent_async"]
