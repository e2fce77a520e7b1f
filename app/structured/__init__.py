"""Structured output on the OpenAI routes: response_format and grammar extras → an engine grammar,
tools → constrained or parsed tool calls, reasoning parsers, and the streaming delta assembler.

The engine only sees one grammar (`json_schema` | `regex` | `ebnf` | `structural_tag`) per request;
everything model-format specific lives here, in the API process.
"""
