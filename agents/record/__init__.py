"""The record that remembers: results, the write-ahead journal, git history, reports."""
