"""Examples of the client SDK (`agent_chain`); `make demo` runs examples/run_demo.py."""
