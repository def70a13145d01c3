"""DePU's domain package: everything the Lambda handlers, the local stack and the tests share.

Nothing in here knows about API Gateway, SQS or EventBridge event shapes; handlers translate those.
"""
