"""A chat agent loop: each turn the model picks a tool with `select`, the program runs it in Python
and feeds the observation back as a user turn, until the model picks "finish" (or a step limit).
Turns are written with the served model's own chat template (read from the server).

    python examples/chat_agent.py --url http://127.0.0.1:30000
"""

from __future__ import annotations

import argparse
import ast
import datetime
import operator

import lang as sgl

TOOLS = ["calculator", "clock", "finish"]
MAX_STEPS = 3
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def calculator(expression: str) -> str:
    """Arithmetic only (+ - * /), never eval."""
    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError("not arithmetic")

    try:
        return str(ev(ast.parse(expression.strip(), mode="eval").body))
    except (ValueError, SyntaxError, ZeroDivisionError) as exc:
        return f"error: {exc}"


def run_tool(tool: str, argument: str) -> str:
    if tool == "calculator":
        return calculator(argument)
    if tool == "clock":
        return datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M UTC")
    return ""


@sgl.function
def agent(s, task):
    s += sgl.system("You are an agent. Each turn pick a tool: calculator, clock or finish. "
                    "Give the tool's input after 'Input:'.")
    s += sgl.user(task)
    steps = []
    for _ in range(MAX_STEPS):
        s += sgl.assistant_begin()
        s += "Tool: " + sgl.select("tool", choices=TOOLS) + "\nInput:"
        s += sgl.gen("input", max_tokens=8, stop="\n", temperature=0)
        s += sgl.assistant_end()
        tool = s["tool"]
        if tool == "finish":
            break
        observation = run_tool(tool, s["input"])
        steps.append({"tool": tool, "input": s["input"].strip(), "observation": observation})
        s += sgl.user("Observation: " + observation)
    s["steps"] = steps
    s += sgl.assistant("Final answer:" + sgl.gen("answer", max_tokens=12, stop="\n", temperature=0))


def main(backend, task: str = "What is 12 * 7 + 3?") -> sgl.ProgramState:
    state = agent.run(task=task, backend=backend)
    if state.error():
        raise state.error()
    for step in state["steps"]:
        print(f"{step['tool']}({step['input']!r}) -> {step['observation']}")
    print("answer:", state["answer"].strip())
    return state


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:30000")
    main(sgl.RuntimeEndpoint(parser.parse_args().url))
