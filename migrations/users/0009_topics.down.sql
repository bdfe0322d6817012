DROP TABLE topic_subscriptions;
DROP TABLE topics;
