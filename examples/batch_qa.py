"""Question answering over a batch: run_batch runs the program for every question concurrently, with a
progress bar; the instruction every program starts with is prefilled once for all of them.

    python examples/batch_qa.py --url http://127.0.0.1:30000
"""

from __future__ import annotations

import argparse

import lang as sgl

QUESTIONS = [
    "What does the json module do?",
    "How do I list the files in a directory?",
    "What is the difference between a list and a tuple?",
    "How do I read a file line by line?",
    "What does the random module do?",
    "How do I get the current time?",
]


@sgl.function
def answer(s, question):
    s += ("You answer questions about Python's standard library with one sentence, then rate your "
          "confidence.\n\n")
    s += "Question: " + question + "\nAnswer:"
    s += sgl.gen("answer", max_tokens=24, stop="\n", temperature=0)
    s += "\nConfidence:" + sgl.select("confidence", choices=[" high", " medium", " low"])


def main(backend, questions: list[str] = QUESTIONS) -> list[sgl.ProgramState]:
    states = answer.run_batch([{"question": q} for q in questions], backend=backend, progress_bar=True)
    for q, s in zip(questions, states):
        if s.error():
            raise s.error()
        print(f"{q}\n  -> {s['answer'].strip()}  [{s['confidence'].strip()}]  "
              f"(cached {s.get_meta_info('answer')['cached_tokens']} prompt tokens)")
    return states


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:30000")
    main(sgl.RuntimeEndpoint(parser.parse_args().url))
