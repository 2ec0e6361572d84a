"""Real OpenAI clients against Faena's /v1: the official `openai` package
(whole and streamed chat, model listing, errors) and LiteLLM's client with
Faena as an "openai-compatible" provider. None of this is Faena's code.

    check.py BASE_URL API_KEY MODEL      (e.g. http://127.0.0.1:8888/v1 fk-… gemini)

Prints one line per check and exits non-zero on the first that fails.
"""
import sys

import litellm
import openai

base, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
question = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello faena"}]


def check(name, ok, detail=""):
    print(f"{'ok' if ok else 'FAILED'} {name} {detail}".rstrip(), flush=True)
    if not ok:
        sys.exit(1)


client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)

models = [m.id for m in client.models.list()]
check("openai: models.list", any(m.startswith(model) for m in models), str(models))

whole = client.chat.completions.create(model=model, messages=question, max_tokens=64)
text = whole.choices[0].message.content
check("openai: chat", bool(text) and whole.choices[0].finish_reason in ("stop", "length"), repr(text))
check("openai: usage", whole.usage is not None and whole.usage.total_tokens > 0, str(whole.usage))

pieces, finish, usage = [], None, None
stream = client.chat.completions.create(
    model=model, messages=question, max_tokens=64, stream=True, stream_options={"include_usage": True}
)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
check("openai: streamed chat", "".join(pieces) == text, repr("".join(pieces)))
check("openai: streamed finish and usage", finish is not None and usage is not None and usage.total_tokens > 0)

try:
    client.chat.completions.create(model="no-such-model", messages=question)
    check("openai: unknown model is an error", False)
except openai.NotFoundError as e:
    check("openai: unknown model -> NotFoundError", e.status_code == 404 and e.code == "model_not_found", str(e))

try:
    openai.OpenAI(base_url=base, api_key="fk-" + "0" * 64, max_retries=0).models.list()
    check("openai: a wrong key is an error", False)
except openai.AuthenticationError as e:
    check("openai: wrong key -> AuthenticationError", e.status_code == 401, str(e))

try:
    client.chat.completions.create(model=model, messages=[{"role": "assistant", "content": "x"}])
    check("openai: a bad request is an error", False)
except openai.BadRequestError as e:
    check("openai: bad request -> BadRequestError", e.status_code == 400, str(e))

# LiteLLM's client, Faena as an OpenAI-compatible provider.
answer = litellm.completion(model=f"openai/{model}", api_base=base, api_key=key, messages=question, max_tokens=64)
check("litellm: chat", answer.choices[0].message.content == text, repr(answer.choices[0].message.content))
streamed = litellm.completion(
    model=f"openai/{model}", api_base=base, api_key=key, messages=question, max_tokens=64, stream=True
)
got = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
check("litellm: streamed chat", got == text, repr(got))
