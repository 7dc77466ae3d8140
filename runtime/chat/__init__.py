"""Chat format of gpt-oss (harmony): rendering conversations to tokens, parsing the model's
stream back into reasoning, final text and tool calls (chat_format.md)."""
