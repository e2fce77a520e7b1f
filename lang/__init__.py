"""`lang`: SGLang's frontend language, without torch. `import lang as sgl` runs SGLang programs.

Depends only on httpx (and tqdm for run_batch's progress bar). See docs/LANG.md.
"""

from lang.api import (
    assistant,
    assistant_begin,
    assistant_end,
    flush_cache,
    gen,
    gen_int,
    gen_string,
    get_server_info,
    select,
    set_default_backend,
    system,
    system_begin,
    system_end,
    user,
    user_begin,
    user_end,
)
from lang.backend.openai import OpenAI
from lang.backend.runtime_endpoint import RuntimeEndpoint
from lang.chat_template import ChatTemplate
from lang.choices import (
    greedy_token_selection,
    token_length_normalized,
    unconditional_likelihood_normalized,
)
from lang.errors import LangError, ServerError, ServerUnreachable
from lang.program import SglFunction, function
from lang.state import ProgramState, ProgramStateGroup, branch

__version__ = "0.1.0"

__all__ = [
    "ChatTemplate", "LangError", "OpenAI", "ProgramState", "ProgramStateGroup", "RuntimeEndpoint", "ServerError",
    "ServerUnreachable", "SglFunction", "assistant", "assistant_begin", "assistant_end", "branch", "flush_cache",
    "function", "gen", "gen_int", "gen_string", "get_server_info", "greedy_token_selection", "select",
    "set_default_backend", "system", "system_begin", "system_end", "token_length_normalized",
    "unconditional_likelihood_normalized", "user", "user_begin", "user_end",
]
