"""Publishing build folders to the Hugging Face Hub."""
