"""Drives `wick serve` with the official openai client; prints one JSON object of results.

Usage: serve_openai_client.py BASE_URL API_KEY CHAT_MODEL ADAPTER EMBED_MODEL
"""
import json
import sys

import openai

base_url, api_key, chat_model, adapter, embed_model = sys.argv[1:6]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=300)
QUESTION = "What is the capital of France?"
ADAPTER_QUESTION = "Tell me about the sea."
SEEDED_QUESTION = "Write a short poem about rain."
TEXTS = ["A man is eating food.", "A man is eating a piece of bread."]
out = {"openai_version": openai.__version__}

# The client asks for base64 by default and decodes it; ask for floats too.
out["embeddings"] = [d.embedding for d in client.embeddings.create(model=embed_model, input=TEXTS).data]
floats = client.embeddings.create(model=embed_model, input=TEXTS, encoding_format="float")
out["embeddings_float"] = [d.embedding for d in floats.data]


def chat(model, question=QUESTION, **kw):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=24, **kw
    )


reply = chat(chat_model)
out["chat"] = reply.choices[0].message.content
out["chat_finish"] = reply.choices[0].finish_reason
out["chat_usage"] = reply.usage.model_dump()
out["chat_streamed"] = "".join(
    c.choices[0].delta.content or "" for c in chat(chat_model, stream=True) if c.choices
)
# Sampling with a seed: the same text as `wick generate --seed` with the same settings.
seeded = client.chat.completions.create(
    model=chat_model, messages=[{"role": "user", "content": SEEDED_QUESTION}],
    temperature=1.0, top_p=0.95, seed=7, max_tokens=24,
)
out["chat_seeded"] = seeded.choices[0].message.content
out["adapter_chat"] = chat(adapter, ADAPTER_QUESTION).choices[0].message.content
out["base_on_adapter_question"] = chat(chat_model, ADAPTER_QUESTION).choices[0].message.content
done = client.completions.create(model=chat_model, prompt="1, 2, 3, 4,", temperature=0, max_tokens=12)
out["completion"] = done.choices[0].text
out["models"] = sorted(m.id for m in client.models.list().data)

try:
    chat(chat_model, n=2)
    out["n2"] = "accepted"
except openai.BadRequestError as e:
    out["n2"] = {"status": e.status_code, "param": e.body.get("param"), "message": e.body.get("message")}
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    out["unknown_model"] = "accepted"
except openai.NotFoundError as e:
    out["unknown_model"] = {"status": e.status_code, "code": e.body.get("code")}
try:
    openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
    out["wrong_key"] = "accepted"
except openai.AuthenticationError as e:
    out["wrong_key"] = {"status": e.status_code}

print(json.dumps(out))
