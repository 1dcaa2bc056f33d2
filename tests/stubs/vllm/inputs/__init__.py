"""vllm/inputs: the prompt types (vllm/inputs/data.py)."""

from vllm.inputs.data import PromptType, TextPrompt, TokensPrompt

__all__ = ["PromptType", "TextPrompt", "TokensPrompt"]
