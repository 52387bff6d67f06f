"""An EC2 frontend: boto3 and the AWS CLI drive the cloud (API version 2016-11-15, Signature Version 4)."""
