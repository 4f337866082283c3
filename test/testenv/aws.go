package testenv

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// AWSConfig returns the configuration for talking to an emulator: region
// us-east-1, static credentials test/test, the SDK's default retryer and
// HTTP client. Point a client at an emulator with BaseEndpoint (the
// Client methods of Kinesis and DynamoDBLocal do).
//
// It is built by hand, not with config.LoadDefaultConfig, so that nothing
// from the environment or ~/.aws (a real profile, AWS_ENDPOINT_URL, a
// region) leaks into tests.
func AWSConfig() aws.Config {
	return aws.Config{
		Region:      "us-east-1",
		Credentials: aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider("test", "test", "")),
	}
}
