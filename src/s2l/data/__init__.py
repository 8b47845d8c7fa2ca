"""Input records → normalised examples → tokenised examples with the prompt masked."""

from s2l.data.formats import FORMATS, Example, PromptTemplate
from s2l.data.pool import Pool, load_pool
from s2l.data.readers import Record, read_records
from s2l.data.tokenize import TokenizedExample, prepare_pool, tokenize_examples

__all__ = ["FORMATS", "Example", "Pool", "PromptTemplate", "Record", "TokenizedExample", "load_pool", "prepare_pool",
           "read_records", "tokenize_examples"]
