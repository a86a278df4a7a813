-- Results whose text the output filter changed (a card number, SSN or e-mail address redacted).
alter table generations add column redacted boolean not null default false;
