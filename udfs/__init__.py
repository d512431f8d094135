"""Row and batch logic with no SparkSession in it, plus thin Spark wrappers."""
