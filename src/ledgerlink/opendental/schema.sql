-- Open Dental schema subset used by ledgerlink's OpenDentalOffice (src/ledgerlink/opendental/office.py).
-- Source: shared/research/opendental_schema.sql (tested on MariaDB 10.11, strict and sql_mode=''), copied
-- table for table; additions made here are marked "ledgerlink addition" and cite their source.
-- tables.py mirrors every table and column below; tests/test_opendental_office.py compares the two on a
-- live MariaDB so they cannot drift.
--
-- Research header, unchanged:
-- Open Dental schema subset for payment-writeback tests (MariaDB / MySQL).
-- Column names, order and SQL types follow Open Dental's own DDL:
--   * UnitTests/Resources/dump.txt (a v21.1.9 database dump) in github.com/OpenDental/opendental, branch 24_3
--   * plus columns added by OpenDentBusiness/Misc/ConvertDatabases7.cs/8.cs up to v24.3
--   * cross-checked against DocumentationBuilder/OpenDentalDocumentation.xml (v24.3) and a v25.4 copy of it.
-- Tables marked "subset" omit columns a writeback never touches; payment, paysplit, definition,
-- task, tasklist, taskunread, commlog, popup, securitylog and preference are complete for v24.3-v25.4
-- (task: v24.3 shape; v25.x replaced TriageCategory with Category + TriagePosition).
-- Real databases are often MyISAM (the dump is); new tables get the server default. Open Dental
-- forces sql_mode='' on its server; NOT NULL columns without DEFAULT below are exactly as in the real DDL,
-- so under a strict sql_mode every such column must be given explicitly on INSERT.
-- The storage engine is left to the server default; run SET SESSION default_storage_engine=MyISAM first to
-- reproduce a non-transactional site. Tested on MariaDB 10.11 with its default strict sql_mode and with sql_mode=''.

CREATE TABLE patient (                         -- subset (real table: 84 columns in v24.3)
  PatNum bigint(20) NOT NULL AUTO_INCREMENT,
  LName varchar(100) DEFAULT '',
  FName varchar(100) DEFAULT '',
  MiddleI varchar(100) DEFAULT '',
  Preferred varchar(100) DEFAULT '',
  PatStatus tinyint(3) unsigned NOT NULL DEFAULT '0',   -- 0 Patient,1 NonPatient,2 Inactive,3 Archived,4 Deleted,5 Deceased,6 Prospective
  Birthdate date NOT NULL DEFAULT '0001-01-01',          -- '0001-01-01' = unknown
  HmPhone varchar(30) DEFAULT '',
  WirelessPhone varchar(30) DEFAULT '',
  Guarantor bigint(20) NOT NULL,                          -- FK patient.PatNum (head of family; = own PatNum for a guarantor)
  Email varchar(100) DEFAULT '',
  EstBalance double NOT NULL DEFAULT '0',
  PriProv bigint(20) NOT NULL,                            -- FK provider.ProvNum, required
  SecProv bigint(20) NOT NULL,
  BillingType bigint(20) NOT NULL,                        -- FK definition.DefNum (Category 4)
  ChartNumber varchar(100) NOT NULL DEFAULT '',           -- varchar(20) before v24.3.1
  BalTotal double NOT NULL DEFAULT '0',                   -- family aging, stored on guarantor only
  ClinicNum bigint(20) NOT NULL,                          -- 0 = no clinic
  DateTStamp timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  SecUserNumEntry bigint(20) NOT NULL,
  SecDateEntry date NOT NULL DEFAULT '0001-01-01',
  SecurityHash varchar(255) NOT NULL,                     -- salted hash of PatNum (v21.4+)
  PRIMARY KEY (PatNum),
  KEY indexLFName (LName,FName),
  KEY indexGuarantor (Guarantor),
  KEY ChartNumber (ChartNumber),
  KEY ClinicNum (ClinicNum)
) DEFAULT CHARSET=utf8;

CREATE TABLE payment (
  PayNum bigint(20) NOT NULL AUTO_INCREMENT,
  PayType bigint(20) NOT NULL,                            -- FK definition.DefNum, Category 10; 0 only for income transfers
  PayDate date NOT NULL DEFAULT '0000-00-00',
  PayAmt double NOT NULL DEFAULT '0',                     -- must equal SUM(paysplit.SplitAmt); negative = refund/void
  CheckNum varchar(25) DEFAULT '',
  BankBranch varchar(25) DEFAULT '',
  PayNote text NOT NULL,
  IsSplit tinyint(1) unsigned NOT NULL DEFAULT '0',       -- legacy: 1 when more than one split
  PatNum bigint(20) NOT NULL,
  ClinicNum bigint(20) NOT NULL,
  DateEntry date NOT NULL DEFAULT '0001-01-01',           -- Open Dental writes NOW() (server date) on insert
  DepositNum bigint(20) NOT NULL,
  Receipt text NOT NULL,
  IsRecurringCC tinyint(4) NOT NULL,
  SecUserNumEntry bigint(20) NOT NULL,                    -- FK userod.UserNum
  SecDateTEdit timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  PaymentSource tinyint(4) NOT NULL,                      -- enum CreditCardSource; 13 = API
  ProcessStatus tinyint(4) NOT NULL,                      -- 0 OfficeProcessed, 1 OnlineProcessed, 2 OnlinePending
  RecurringChargeDate date NOT NULL DEFAULT '0001-01-01',
  ExternalId varchar(255) NOT NULL,                       -- v19.2.1
  PaymentStatus tinyint(4) NOT NULL,                      -- v19.2.1, PaySimple ACH states
  IsCcCompleted tinyint(4) NOT NULL,                      -- v22.1.7
  MerchantFee double NOT NULL,                            -- v23.1.16
  PRIMARY KEY (PayNum),
  KEY indexPatNum (PatNum),
  KEY DepositNum (DepositNum),
  KEY SecUserNumEntry (SecUserNumEntry),
  KEY ClinicNum (ClinicNum),
  KEY PayType (PayType),
  KEY ProcessStatus (ProcessStatus)
) DEFAULT CHARSET=utf8;

CREATE TABLE paysplit (
  SplitNum bigint(20) NOT NULL AUTO_INCREMENT,
  SplitAmt double NOT NULL DEFAULT '0',
  PatNum bigint(20) NOT NULL,
  ProcDate date NOT NULL DEFAULT '0000-00-00',            -- deprecated; Open Dental writes '0001-01-01'
  PayNum bigint(20) NOT NULL,                             -- FK payment.PayNum, never 0
  IsDiscount tinyint(1) unsigned NOT NULL DEFAULT '0',
  DiscountType tinyint(3) unsigned NOT NULL DEFAULT '0',
  ProvNum bigint(20) NOT NULL,
  PayPlanNum bigint(20) NOT NULL,
  DatePay date NOT NULL DEFAULT '0001-01-01',             -- always equal to payment.PayDate
  ProcNum bigint(20) NOT NULL,
  DateEntry date NOT NULL DEFAULT '0001-01-01',           -- Open Dental writes NOW() on insert
  UnearnedType bigint(20) NOT NULL,                       -- FK definition.DefNum, Category 29, or 0
  ClinicNum bigint(20) NOT NULL,
  SecUserNumEntry bigint(20) NOT NULL,
  SecDateTEdit timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  FSplitNum bigint(20) NOT NULL,
  AdjNum bigint(20) NOT NULL,
  PayPlanChargeNum bigint(20) NOT NULL,
  PayPlanDebitType tinyint(4) NOT NULL,                   -- v21.2.1
  SecurityHash varchar(255) NOT NULL,                     -- v21.4.1; salted hash of PatNum,SplitAmt,DatePay
  PRIMARY KEY (SplitNum),
  KEY indexPatNum (PatNum),
  KEY ProcNum (ProcNum),
  KEY PayNum (PayNum),
  KEY ClinicNum (ClinicNum),
  KEY DatePay (DatePay),
  KEY PayPlanNum (PayPlanNum),
  KEY ProvNum (ProvNum)
) DEFAULT CHARSET=utf8;

CREATE TABLE adjustment (                      -- ledgerlink addition: complete for v21.1-v25.4
  -- Source: UnitTests/Resources/dump.txt (v21.1.9) in OpenDental/opendental and
  -- OpenDentBusiness/TableTypes/Adjustment.cs; POST /adjustments since API v22.2.22.
  AdjNum bigint(20) NOT NULL AUTO_INCREMENT,
  AdjDate date NOT NULL DEFAULT '0001-01-01',             -- date shown on the account; the API refuses future dates
  AdjAmt double NOT NULL DEFAULT '0',                     -- signed; its sign must match the AdjType's ItemValue '+'/'-'
  PatNum bigint(20) NOT NULL,
  AdjType bigint(20) NOT NULL,                            -- FK definition.DefNum, Category 1 (AdjTypes)
  ProvNum bigint(20) NOT NULL,
  AdjNote text,
  ProcDate date NOT NULL DEFAULT '0001-01-01',
  ProcNum bigint(20) NOT NULL,                            -- FK procedurelog or 0
  DateEntry date NOT NULL DEFAULT '0001-01-01',           -- Open Dental writes NOW() on insert
  ClinicNum bigint(20) NOT NULL,
  StatementNum bigint(20) NOT NULL,
  SecUserNumEntry bigint(20) NOT NULL,
  SecDateTEdit timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  TaxTransID bigint(20) NOT NULL,                         -- deprecated (Avalara)
  PRIMARY KEY (AdjNum),
  KEY indexPatNum (PatNum),
  KEY ClinicNum (ClinicNum),
  KEY StatementNum (StatementNum),
  KEY ProcNum (ProcNum),
  KEY indexProvNum (ProvNum),
  KEY SecUserNumEntry (SecUserNumEntry),
  KEY indexPNAmt (ProcNum,AdjAmt),
  KEY AdjDatePN (AdjDate,PatNum),
  KEY TaxTransID (TaxTransID)
) DEFAULT CHARSET=utf8;

CREATE TABLE definition (
  DefNum bigint(20) NOT NULL AUTO_INCREMENT,
  Category tinyint(3) unsigned NOT NULL DEFAULT '0',      -- 10 PaymentTypes, 27 CommLogTypes, 29 PaySplitUnearnedType, 33 TaskPriorities
  ItemOrder smallint(5) unsigned NOT NULL DEFAULT '0',
  ItemName varchar(255) DEFAULT '',
  ItemValue varchar(255) DEFAULT '',                      -- PaymentTypes: 'N' = not selected for deposit
  ItemColor int(11) NOT NULL DEFAULT '0',
  IsHidden tinyint(3) unsigned NOT NULL DEFAULT '0',
  PRIMARY KEY (DefNum)
) DEFAULT CHARSET=utf8;

CREATE TABLE provider (                        -- subset
  ProvNum bigint(20) NOT NULL AUTO_INCREMENT,
  Abbr varchar(255) DEFAULT '',
  ItemOrder smallint(5) unsigned NOT NULL DEFAULT '0',
  LName varchar(100) DEFAULT '',
  FName varchar(100) DEFAULT '',
  IsHidden tinyint(3) unsigned NOT NULL DEFAULT '0',
  ProvStatus tinyint(4) NOT NULL,                         -- 0 Active, 1 Deleted
  PRIMARY KEY (ProvNum)
) DEFAULT CHARSET=utf8;

CREATE TABLE clinic (                          -- subset
  ClinicNum bigint(20) NOT NULL AUTO_INCREMENT,
  Description varchar(255) DEFAULT '',
  Abbr varchar(255) NOT NULL,
  IsHidden tinyint(4) NOT NULL,
  PRIMARY KEY (ClinicNum)
) DEFAULT CHARSET=utf8;

CREATE TABLE userod (                          -- subset
  UserNum bigint(20) NOT NULL AUTO_INCREMENT,
  UserName varchar(255) DEFAULT '',
  ClinicNum bigint(20) NOT NULL,
  IsHidden tinyint(1) NOT NULL DEFAULT '0',
  TaskListInBox bigint(20) NOT NULL,                      -- FK tasklist.TaskListNum, 0 = none
  PRIMARY KEY (UserNum)
) DEFAULT CHARSET=utf8;

CREATE TABLE tasklist (
  TaskListNum bigint(20) NOT NULL AUTO_INCREMENT,
  Descript varchar(255) DEFAULT '',
  Parent bigint(20) NOT NULL,                             -- 0 = main trunk
  DateTL date NOT NULL DEFAULT '0001-01-01',
  IsRepeating tinyint(3) unsigned NOT NULL DEFAULT '0',
  DateType tinyint(3) unsigned NOT NULL DEFAULT '0',
  FromNum bigint(20) NOT NULL,
  ObjectType tinyint(3) unsigned NOT NULL DEFAULT '0',
  DateTimeEntry datetime NOT NULL DEFAULT '0001-01-01 00:00:00',
  GlobalTaskFilterType tinyint(4) NOT NULL,
  TaskListStatus tinyint(4) NOT NULL,                     -- 0 Active, 1 Archived
  PRIMARY KEY (TaskListNum),
  KEY indexParent (Parent)
) DEFAULT CHARSET=utf8;

CREATE TABLE task (
  TaskNum bigint(20) NOT NULL AUTO_INCREMENT,
  TaskListNum bigint(20) NOT NULL,
  DateTask date NOT NULL DEFAULT '0001-01-01',
  KeyNum bigint(20) NOT NULL,                             -- PatNum when ObjectType=1
  Descript text,
  TaskStatus tinyint(3) unsigned NOT NULL DEFAULT '0',    -- 0 New, 1 Viewed, 2 Done
  IsRepeating tinyint(3) unsigned NOT NULL DEFAULT '0',
  DateType tinyint(3) unsigned NOT NULL DEFAULT '0',
  FromNum bigint(20) NOT NULL,
  ObjectType tinyint(3) unsigned NOT NULL DEFAULT '0',    -- 0 None, 1 Patient, 2 Appointment
  DateTimeEntry datetime NOT NULL DEFAULT '0001-01-01 00:00:00',
  UserNum bigint(20) NOT NULL,
  DateTimeFinished datetime NOT NULL,
  PriorityDefNum bigint(20) NOT NULL,                     -- FK definition.DefNum, Category 33
  ReminderGroupId varchar(20) NOT NULL,
  ReminderType smallint(6) NOT NULL,
  ReminderFrequency int(11) NOT NULL,
  DateTimeOriginal datetime NOT NULL DEFAULT '0001-01-01 00:00:00',
  SecDateTEdit timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  DescriptOverride varchar(255) NOT NULL,
  IsReadOnly tinyint(1) NOT NULL DEFAULT '0',             -- v22.2.1
  TriageCategory bigint(20) NOT NULL,                     -- v22.2.1 (HQ only)
  PRIMARY KEY (TaskNum),
  KEY indexTaskListNum (TaskListNum),
  KEY KeyNum (KeyNum),
  KEY TaskStatus (TaskStatus)
) DEFAULT CHARSET=utf8;

CREATE TABLE taskunread (
  TaskUnreadNum bigint(20) NOT NULL AUTO_INCREMENT,
  TaskNum bigint(20) NOT NULL,
  UserNum bigint(20) NOT NULL,
  PRIMARY KEY (TaskUnreadNum),
  KEY TaskNum (TaskNum),
  KEY UserNum (UserNum)
) DEFAULT CHARSET=utf8;

CREATE TABLE commlog (
  CommlogNum bigint(20) NOT NULL AUTO_INCREMENT,
  PatNum bigint(20) NOT NULL,
  CommDateTime datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  CommType bigint(20) NOT NULL,                           -- FK definition.DefNum, Category 27
  Note text,
  Mode_ tinyint(3) unsigned NOT NULL DEFAULT '0',         -- 0 None,1 Email,2 Mail,3 Phone,4 InPerson,5 Text,...
  SentOrReceived tinyint(3) unsigned NOT NULL DEFAULT '0',-- 0 Neither,1 Sent,2 Received
  UserNum bigint(20) NOT NULL,
  Signature text NOT NULL,
  SigIsTopaz tinyint(4) NOT NULL,
  DateTStamp timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  DateTimeEnd datetime NOT NULL DEFAULT '0001-01-01 00:00:00',
  CommSource tinyint(4) DEFAULT NULL,                     -- 0 User, 2 ProgramLink, 7 FHIR/API, ...
  ProgramNum bigint(20) NOT NULL,
  DateTEntry datetime NOT NULL DEFAULT '0001-01-01 00:00:00',   -- v22.2.1
  ReferralNum bigint(20) NOT NULL,                        -- v23.1.0
  CommReferralBehavior tinyint(4) NOT NULL,               -- v23.1.0
  PRIMARY KEY (CommlogNum),
  KEY ReferralNum (ReferralNum),
  KEY indexPNCDateCType (PatNum,CommDateTime,CommType)
) DEFAULT CHARSET=utf8;

CREATE TABLE popup (
  PopupNum bigint(20) NOT NULL AUTO_INCREMENT,
  PatNum bigint(20) NOT NULL,
  Description text,
  IsDisabled tinyint(1) NOT NULL,                         -- deprecated
  PopupLevel tinyint(4) NOT NULL,                         -- 0 Patient, 1 Family, 2 SuperFamily
  UserNum bigint(20) NOT NULL,
  DateTimeEntry datetime NOT NULL,
  IsArchived tinyint(4) NOT NULL,
  PopupNumArchive bigint(20) NOT NULL,
  DateTimeDisabled datetime NOT NULL DEFAULT '0001-01-01 00:00:00',  -- v22.2.1
  PRIMARY KEY (PopupNum),
  KEY PatNum (PatNum)
) DEFAULT CHARSET=utf8;

CREATE TABLE securitylog (
  SecurityLogNum bigint(20) NOT NULL AUTO_INCREMENT,
  PermType smallint(6) NOT NULL,                          -- was tinyint unsigned before v24.3.1
  UserNum bigint(20) NOT NULL,
  LogDateTime datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  LogText text,
  PatNum bigint(20) NOT NULL,
  CompName varchar(255) NOT NULL,
  FKey bigint(20) NOT NULL,
  LogSource tinyint(4) NOT NULL,
  DefNum bigint(20) NOT NULL,
  DefNumError bigint(20) NOT NULL,
  DateTPrevious datetime NOT NULL DEFAULT '0001-01-01 00:00:00',
  PRIMARY KEY (SecurityLogNum),
  KEY PatNum (PatNum),
  KEY FKey (FKey)
) DEFAULT CHARSET=utf8;

CREATE TABLE preference (                      -- key/value settings; read them, never hard-code behaviour
  PrefName varchar(255) NOT NULL DEFAULT '',
  ValueString text NOT NULL,
  PrefNum bigint(20) NOT NULL AUTO_INCREMENT,
  Comments text,
  PRIMARY KEY (PrefNum),
  KEY PrefName (PrefName)
) DEFAULT CHARSET=utf8;

-- Seed rows as shipped in Open Dental's own test database (UnitTests/Resources/dump.txt, v21.1.9); DefNums,
-- ProvNums and UserNums are per-site: never hard-code them outside tests.
INSERT INTO definition (DefNum,Category,ItemOrder,ItemName,ItemValue,ItemColor,IsHidden) VALUES
 (69,10,0,'Check','',0,0),(70,10,1,'Cash','',0,0),(71,10,2,'Credit Card','',0,0),(72,10,3,'Not used','',0,1),
 (235,27,0,'ApptRelated','APPT',0,0),(236,27,1,'Insurance','',0,0),(237,27,2,'Financial','FIN',0,0),
 (238,27,3,'Recall','RECALL',0,0),(239,27,4,'Misc','MISC',0,0),
 (283,29,0,'Prepayment','',0,0),(258,33,0,'Normal','D',-1,0),
 -- ledgerlink addition: the adjustment types (Category 1) of the same dump, with their '+'/'-' ItemValue
 (1,1,2,'Misc Neg Adjustment','-',0,0),(2,1,3,'Misc Pos Adjustment','+',0,0),
 (8,1,0,'Professional Discount','-',0,0),(9,1,1,'Cash Discount','-',0,0),(10,1,5,'Not used','-',0,1),
 (16,1,10,'Returned Check','+',0,0),(17,1,11,'NSF fee','+',0,0),(170,1,12,'Finance Charge','+',0,0);
INSERT INTO preference (PrefName,ValueString) VALUES
 ('EasyNoClinics','1'),                    -- '1' = clinics feature off
 ('RigorousAccounting','1'),               -- 0 EnforceFully, 1 AutoSplitOnly, 2 DontEnforce
 ('PrepaymentUnearnedType','283'),         -- default unearned DefNum (Category 29)
 ('ApiPaymentType','69'),                  -- PayType used by API POST /payments when none given
 ('PracticeDefaultProv','1'),
 ('StatementAccountsUseChartNumber','0'),  -- '1' = statements print guarantor ChartNumber as account number
 ('PaymentClinicSetting','1'),             -- 0 selected clinic, 1 patient default clinic, 2 selected except HQ
 ('AccountAllowFutureDebits','0'),
 ('FutureTransDatesAllowed','0');
-- ledgerlink addition: the two providers of the same dump (subset of columns), so PracticeDefaultProv=1 exists
INSERT INTO provider (ProvNum,Abbr,ItemOrder,LName,FName,IsHidden,ProvStatus) VALUES
 (1,'DOC',0,'Albert','Brian',0,0),(2,'HYG',1,'Jones','Tina',0,0);
-- ledgerlink addition: one task list and the Admin user whose inbox it is, so a fresh office can take a task.
-- Not from the dump (its user and task list rows were not checked); names follow Open Dental's defaults.
INSERT INTO tasklist (TaskListNum,Descript,Parent,DateTL,IsRepeating,DateType,FromNum,ObjectType,DateTimeEntry,
  GlobalTaskFilterType,TaskListStatus) VALUES
 (1,'Office',0,'0001-01-01',0,0,0,0,'0001-01-01 00:00:00',0,0);
INSERT INTO userod (UserNum,UserName,ClinicNum,IsHidden,TaskListInBox) VALUES
 (1,'Admin',0,0,1);
